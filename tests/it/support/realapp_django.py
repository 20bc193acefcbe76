#!/usr/bin/env python3
"""A real Django app for the integration tests (tests/it/realapps2.rs), on 127.0.0.1:PORT.

One file is the whole project: settings (settings.configure), URLs and views. No database:
the accounts live in a dict, and sessions are Django's signed-cookie sessions
(django.contrib.sessions.backends.signed_cookies), so a session is the `sessionid` cookie itself.
It runs on Django's own threaded WSGI server (django.core.servers.basehttp, what `runserver`
uses), so requests are read exactly as Django reads them:

  /accounts/login/  GET: the form, with Django's CSRF token (CsrfViewMiddleware is on).
                    POST: the name is normalised with Django's AbstractBaseUser.normalize_username
                    (NFKC) and looked up case-insensitively; a right password cycles the session
                    key, rotates the CSRF token and stores the user (what django.contrib.auth's
                    login() does), then redirects to `next` (POST, then query) when
                    url_has_allowed_host_and_scheme allows it, else to LOGIN_REDIRECT_URL (/),
                    as LoginView does. A wrong password renders the form again with 200.
  /                 needs a login; "Hello <user>".
  /whoami           JSON: the user the session names, the proxy's X-Twofa-User header, and the
                    cookies Django parsed (django.http.cookie.parse_cookie: UTF-8 decoded, names
                    and values stripped with str.strip, so Unicode blanks go; the last of two
                    equal names wins). 401 without a user.
  /accounts/logout/ flushes the session.

Prints "ready" once listening; exits when stdin closes (the test process went away) or on kill.
"""
import argparse
import os
import sys
import threading

ACCOUNTS = {"alice": "wonderland", "mallory": "mallory", "carol": "singer"}


def configure():
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY=os.urandom(32).hex(),
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
        DATABASES={},
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        LOGIN_REDIRECT_URL="/",
        LOGIN_URL="/accounts/login/",
        USE_TZ=True,
        LOGGING_CONFIG=None,
        TEMPLATES=[],
    )
    import django

    django.setup()


LOGIN_FORM = (
    "<h1>Sign in</h1>{error}"
    '<form method="post" action="/accounts/login/{query}">'
    '<input type="hidden" name="csrfmiddlewaretoken" value="{csrf}">'
    '<input name="username"><input name="password" type="password">'
    "<button>Sign in</button></form>"
)


def check(name, password):
    """The account if the password is right, else None: Django's NFKC normalisation of the
    typed name (AbstractBaseUser.normalize_username), then a case-insensitive lookup."""
    from django.contrib.auth.base_user import AbstractBaseUser

    if name is None or password is None:
        return None
    account = AbstractBaseUser.normalize_username(name).casefold()
    expected = ACCOUNTS.get(account)
    return account if expected is not None and password == expected else None


def identity(request):
    """The proxy's X-Twofa-User (WSGI hands headers over as Latin-1; the proxy sends UTF-8)."""
    raw = request.META.get("HTTP_X_TWOFA_USER")
    return None if raw is None else raw.encode("latin1").decode("utf-8", "replace")


def login_view(request):
    from django.http import HttpResponse, HttpResponseRedirect
    from django.middleware.csrf import get_token, rotate_token
    from django.utils.html import escape
    from django.utils.http import url_has_allowed_host_and_scheme

    error = ""
    if request.method == "POST":
        account = check(request.POST.get("username"), request.POST.get("password"))
        if account is not None:
            request.session.cycle_key()
            request.session["user"] = account
            rotate_token(request)
            target = request.POST.get("next", request.GET.get("next", ""))
            if not url_has_allowed_host_and_scheme(
                target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
            ):
                target = "/"
            return HttpResponseRedirect(target)
        error = "<p>Please enter a correct username and password.</p>"
    query = "?" + request.GET.urlencode() if request.GET else ""
    return HttpResponse(LOGIN_FORM.format(error=error, query=escape(query), csrf=get_token(request)))


def home(request):
    from django.http import HttpResponse, HttpResponseRedirect

    user = request.session.get("user")
    if user is None:
        return HttpResponseRedirect("/accounts/login/?next=/")
    return HttpResponse(f"<h1>Hello {user}</h1><p>proxy identity: {identity(request) or ''}</p>")


def whoami(request):
    from django.http import JsonResponse

    user = request.session.get("user")
    body = {
        "user": user,
        "identity": identity(request),
        "cookies": [[k, v] for k, v in request.COOKIES.items()],
    }
    return JsonResponse(body, status=200 if user else 401)


def logout_view(request):
    from django.http import HttpResponseRedirect

    request.session.flush()
    return HttpResponseRedirect("/accounts/login/")


def urls():
    from django.urls import path

    return [
        path("accounts/login/", login_view),
        path("accounts/logout/", logout_view),
        path("whoami", whoami),
        path("", home),
    ]


def exit_when_stdin_closes():
    def watch():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def serve(port):
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadedWSGIServer(("127.0.0.1", port), QuietHandler)
    server.set_app(WSGIHandler())
    print("ready", flush=True)
    server.serve_forever()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    exit_when_stdin_closes()
    configure()
    # ROOT_URLCONF is this module (`__main__`); Django reads urlpatterns at the first request.
    global urlpatterns
    urlpatterns = urls()
    serve(args.port)


urlpatterns = []

if __name__ == "__main__":
    main()
