"""An SMTP relay for the tests: requires AUTH (PLAIN or LOGIN) with the
given user and password, and writes each message it accepts to DIR as
NNNN.eml (the bytes received) with NNNN.json (envelope and login) beside it.

    smtp-sink.py PORT DIR USER PASSWORD

Prints "ready" once it listens; runs until killed or stdin closes."""

import json
import pathlib
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, out, user, password = int(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4]


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == user.encode()
        and auth_data.password == password.encode()
    )
    return AuthResult(success=ok, auth_data=auth_data)


class Sink:
    count = 0

    async def handle_DATA(self, server, session, envelope):
        Sink.count += 1
        name = out / f"{Sink.count:04}"
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "login": session.auth_data.login.decode() if session.authenticated and session.auth_data else None,
        }
        name.with_suffix(".json").write_text(json.dumps(meta))
        # The .eml last: a reader that sees it finds the .json too.
        tmp = name.with_suffix(".tmp")
        tmp.write_bytes(envelope.original_content)
        tmp.rename(name.with_suffix(".eml"))
        return "250 OK"


controller = Controller(
    Sink(),
    hostname="127.0.0.1",
    port=port,
    authenticator=authenticate,
    auth_required=True,
    auth_require_tls=False,
)
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
