"""Account: the signed-in staff member's console language and password."""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from aftercare.errors import UserError
from aftercare.models import StaffUser
from aftercare.staff import change_own_password, confirm_password, set_locale
from aftercare.web.console import i18n
from aftercare.web.console.base import Page, page
from aftercare.web.console.i18n import LANGUAGES

LANGUAGE_NAMES = {"en": "English", "fr": "Français"}  # each in its own language


def _show(current: Page, status: int = 200) -> Response:
    clinic_lang = current.app.settings.messaging.default_locale
    return current.render("account.html", status=status, nav="account",
                          languages=[(lang, LANGUAGE_NAMES.get(lang, lang)) for lang in LANGUAGES],
                          clinic_language=LANGUAGE_NAMES.get(clinic_lang, clinic_lang))


@page()
def account_page(current: Page) -> Response:
    """The staff member's own settings."""
    return _show(current)


@page()
def account_language(current: Page) -> Response:
    """The console's language for this staff member ("" is the clinic's)."""
    try:
        with current.db() as db:
            user = db.get(StaffUser, current.user.id)
            assert user is not None
            set_locale(db, user, current.optional("locale"), LANGUAGES)
    except UserError as error:
        current.refuse(error)
        return _show(current, status=400)
    # The notice is in the language just chosen, as the next page will be.
    chosen = i18n.language_of(current.optional("locale")
                              or current.app.settings.messaging.default_locale)
    return current.redirect("/account", i18n.Translator(chosen).gettext("Language saved."))


@page()
def account_password(current: Page) -> Response:
    """A new password, given the current one; other browsers are signed out."""
    try:
        with current.db() as db:  # a wrong current password is counted, so committed
            user = db.get(StaffUser, current.user.id)
            assert user is not None
            confirmed = confirm_password(db, user, _raw(current, "current_password"),
                                         current.app.clock())
            locked = user.locked_until is not None and user.locked_until > current.app.clock()
            if confirmed:
                change_own_password(db, user, _raw(current, "password"),
                                    keep_session=current.session_id)
    except UserError as error:
        current.refuse(error)
        return _show(current, status=400)
    if locked and not confirmed:  # the fifth wrong password: signed out everywhere
        return RedirectResponse("/login", status_code=303)
    if not confirmed:
        current.refuse(UserError("current_password", current._("is not your current password")))
        return _show(current, status=400)
    return current.redirect("/account", current._(
        "Password changed; your other browsers are signed out."))


def _raw(current: Page, name: str) -> str:
    """A password as typed (spaces are part of it: never stripped)."""
    value = current.form.get(name) if current.form is not None else None
    return value if isinstance(value, str) else ""


routes: list[BaseRoute] = [
    Route("/account", account_page, methods=["GET"]),
    Route("/account/language", account_language, methods=["POST"]),
    Route("/account/password", account_password, methods=["POST"]),
]
