"""`protocols` and `preview`: what each treatment sends, when, and in which words."""

from __future__ import annotations

import click

from aftercare.cli import render, views
from aftercare.cli.context import Shown, Work, json_option, with_app
from aftercare.errors import UserError
from aftercare.preview import preview


@click.command()
@json_option("Print the protocols as JSON.")
@with_app
def protocols(work: Work, as_json: bool) -> Shown:
    """List the treatments: course, maintenance and every step with its timing."""
    listed = [views.protocol_json(p) for p in work.app.protocols]
    return listed if as_json else render.protocols(listed)


@click.command("preview")
@click.option("--treatment", required=True, help="Protocol key, e.g. cellulite.")
@click.option("--locale", help="Language (default: messaging.default_locale).")
@click.option("--channel", type=click.Choice(["sms", "email"]), help="Only this channel.")
@with_app
def preview_command(work: Work, treatment: str, locale: str | None, channel: str | None) -> Shown:
    """Show every message of a treatment as a sample patient would receive it."""
    app = work.app
    locale = locale or app.settings.messaging.default_locale
    if locale not in app.renderer.locales():
        raise UserError("locale", f"'{locale}' has no templates; use one of "
                        f"{', '.join(app.renderer.locales())}")
    items = preview(app.settings, app.renderer, app.protocols.get(treatment), locale, channel,
                    today=app.clock())
    return render.preview(items, locale)
