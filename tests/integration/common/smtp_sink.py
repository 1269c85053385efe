"""A real SMTP submission server for the tests: aiosmtpd (Debian's python3-aiosmtpd)
with TLS (implicit, or STARTTLS) and AUTH PLAIN/LOGIN against one user, writing each
accepted message to OUT/<n>.eml and its envelope to OUT/<n>.json.

Recipients whose local part starts with `refuse` are refused for good (550), those
starting with `later` for now (451), to exercise the client's error handling.

Usage: smtp_sink.py PORT implicit|starttls CERT KEY USER PASSWORD OUT
Prints `ready` on stdout once it listens; runs until killed.
"""

import asyncio
import json
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def main():
    port, mode, cert, key, user, password, out = sys.argv[1:8]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    counter = {"n": 0}

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False)

    class Handler:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            local = address.split("@")[0]
            if local.startswith("refuse"):
                return "550 5.1.1 <%s>: recipient unknown" % address
            if local.startswith("later"):
                return "451 4.3.0 try again later"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            counter["n"] += 1
            base = os.path.join(out, "%04d" % counter["n"])
            with open(base + ".eml.tmp", "wb") as f:
                f.write(envelope.original_content)
            with open(base + ".json", "w") as f:
                json.dump(
                    {
                        "mail_from": envelope.mail_from,
                        "rcpt_tos": envelope.rcpt_tos,
                        "authenticated": bool(session.authenticated),
                        "tls": mode == "implicit" or session.ssl is not None,
                    },
                    f,
                )
            os.rename(base + ".eml.tmp", base + ".eml")
            return "250 2.0.0 Message accepted"

    def factory():
        return SMTP(
            Handler(),
            hostname="localhost",
            authenticator=authenticator,
            auth_required=True,
            # With implicit TLS the connection is encrypted before aiosmtpd sees it (it
            # only knows STARTTLS): AUTH is offered at once there.
            auth_require_tls=mode == "starttls",
            tls_context=context if mode == "starttls" else None,
            require_starttls=mode == "starttls",
        )

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(
            factory,
            host="127.0.0.1",
            port=int(port),
            ssl=context if mode == "implicit" else None,
        )
    )
    print("ready", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
