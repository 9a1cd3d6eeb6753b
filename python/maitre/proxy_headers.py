"""WSGI middleware that applies trusted proxy headers (``Forwarded`` and
``X-Forwarded-*``) to the environ and removes the untrusted ones, with the
behaviour of Waitress 3.0.2."""

from collections import namedtuple

from .utilities import BadRequest, logger, undquote

# The environ names (without the ``HTTP_`` prefix) of the proxy headers.
PROXY_HEADERS = frozenset(
    (
        "X_FORWARDED_FOR",
        "X_FORWARDED_HOST",
        "X_FORWARDED_PROTO",
        "X_FORWARDED_PORT",
        "X_FORWARDED_BY",
        "FORWARDED",
    )
)

Forwarded = namedtuple("Forwarded", ["by", "for_", "host", "proto"])


class MalformedProxyHeader(Exception):
    """A trusted proxy header could not be parsed."""

    def __init__(self, header, reason, value):
        self.header = header
        self.reason = reason
        self.value = value
        super().__init__(header, reason, value)


def proxy_headers_middleware(
    app,
    trusted_proxy=None,
    trusted_proxy_count=1,
    trusted_proxy_headers=None,
    clear_untrusted=True,
    log_untrusted=False,
    logger=logger,
):
    """Wrap ``app`` so that requests from ``trusted_proxy`` (or from any peer
    when it is ``"*"``) have ``trusted_proxy_headers`` applied to the environ,
    and, when ``clear_untrusted`` is true, every proxy header that was not
    trusted is removed. A malformed trusted header gets a 400 response."""

    def translate_proxy_headers(environ, start_response):
        untrusted = PROXY_HEADERS
        peer = environ["REMOTE_ADDR"]
        if trusted_proxy == "*" or peer == trusted_proxy:
            try:
                untrusted = parse_proxy_headers(
                    environ,
                    trusted_proxy_count=trusted_proxy_count,
                    trusted_proxy_headers=trusted_proxy_headers,
                    logger=logger,
                )
            except MalformedProxyHeader as exc:
                logger.warning(
                    'Malformed proxy header "%s" from "%s": %s value: %s',
                    exc.header,
                    peer,
                    exc.reason,
                    exc.value,
                )
                error = BadRequest(f'Header "{exc.header}" malformed.')
                return error.wsgi_response(environ, start_response)

        if clear_untrusted:
            clear_untrusted_headers(environ, untrusted, log_warning=log_untrusted, logger=logger)

        return app(environ, start_response)

    return translate_proxy_headers


def _split_hops(raw, count, bracket_ipv6):
    """Split a comma-separated X-Forwarded-* value, unquote each hop and keep
    the last ``count`` of them."""
    hops = []
    for hop in raw.split(","):
        hop = undquote(hop.strip())
        if bracket_ipv6 and "." not in hop and ":" in hop and hop[-1] != "]":
            # A bare IPv6 address (no port can be expressed without brackets).
            hop = f"[{hop}]"
        hops.append(hop)
    return hops[-count:]


def _rewrite_trusted(environ, key, count):
    """Keep only the trusted (last ``count``) entries of a comma list header."""
    environ[key] = ",".join(environ[key].split(",")[-count:]).strip()


def _single_value(environ, key):
    value = undquote(environ.get(key, ""))
    if "," in value:
        raise ValueError("Unspecified behavior for multiple values found in header")
    return value


def _parse_forwarded_elements(forwarded, logger):
    """Parse an RFC 7239 ``Forwarded`` value into a list of ``Forwarded``."""
    elements = []
    for element in forwarded.split(","):
        values = {"by": "", "for": "", "host": "", "proto": ""}
        for pair in element.strip().split(";"):
            pair = pair.lower()
            if not pair:
                continue
            token, equals, value = pair.partition("=")
            if equals != "=":
                raise ValueError('Invalid forwarded-pair missing "="')
            if token.strip() != token:
                raise ValueError("Token may not be surrounded by whitespace")
            if value.strip() != value:
                raise ValueError("Value may not be surrounded by whitespace")
            if token in values:
                values[token] = undquote(value)
            else:
                logger.warning("Unknown Forwarded token: %s", token)
        elements.append(Forwarded(values["by"], values["for"], values["host"], values["proto"]))
    return elements


def parse_proxy_headers(environ, trusted_proxy_count, trusted_proxy_headers, logger=logger):
    """Apply the trusted proxy headers to ``environ`` and return the set of
    proxy header names (environ spelling, without ``HTTP_``) that remain
    untrusted."""
    if trusted_proxy_headers is None:
        trusted_proxy_headers = set()
    count = trusted_proxy_count

    host = proto = port = ""
    client_addr = None
    untrusted = set(PROXY_HEADERS)

    if "x-forwarded-for" in trusted_proxy_headers and "HTTP_X_FORWARDED_FOR" in environ:
        try:
            client_addr = _split_hops(environ["HTTP_X_FORWARDED_FOR"], count, True)[0]
            untrusted.remove("X_FORWARDED_FOR")
            _rewrite_trusted(environ, "HTTP_X_FORWARDED_FOR", count)
        except Exception as exc:  # noqa: BLE001 (any parse failure is a 400)
            raise MalformedProxyHeader("X-Forwarded-For", str(exc), environ["HTTP_X_FORWARDED_FOR"])

    if "x-forwarded-host" in trusted_proxy_headers and "HTTP_X_FORWARDED_HOST" in environ:
        try:
            host = _split_hops(environ["HTTP_X_FORWARDED_HOST"], count, False)[0]
            untrusted.remove("X_FORWARDED_HOST")
            _rewrite_trusted(environ, "HTTP_X_FORWARDED_HOST", count)
        except Exception as exc:  # noqa: BLE001 (any parse failure is a 400)
            raise MalformedProxyHeader(
                "X-Forwarded-Host", str(exc), environ["HTTP_X_FORWARDED_HOST"]
            )

    if "x-forwarded-proto" in trusted_proxy_headers:
        try:
            proto = _single_value(environ, "HTTP_X_FORWARDED_PROTO")
            untrusted.remove("X_FORWARDED_PROTO")
        except Exception as exc:  # noqa: BLE001 (any parse failure is a 400)
            raise MalformedProxyHeader(
                "X-Forwarded-Proto", str(exc), environ["HTTP_X_FORWARDED_PROTO"]
            )

    if "x-forwarded-port" in trusted_proxy_headers:
        try:
            port = _single_value(environ, "HTTP_X_FORWARDED_PORT")
            untrusted.remove("X_FORWARDED_PORT")
        except Exception as exc:  # noqa: BLE001 (any parse failure is a 400)
            raise MalformedProxyHeader(
                "X-Forwarded-Port", str(exc), environ["HTTP_X_FORWARDED_PORT"]
            )

    if "x-forwarded-by" in trusted_proxy_headers:
        # Not used by the server itself, but the app may read it.
        untrusted.remove("X_FORWARDED_BY")

    forwarded = ""
    if "forwarded" in trusted_proxy_headers:
        forwarded = environ.get("HTTP_FORWARDED", None)
        untrusted = PROXY_HEADERS - {"FORWARDED"}

    # A trusted Forwarded header takes priority over the X-Forwarded-* ones.
    if forwarded:
        try:
            elements = _parse_forwarded_elements(forwarded, logger)
        except Exception as exc:  # noqa: BLE001 (any parse failure is a 400)
            raise MalformedProxyHeader("Forwarded", str(exc), environ["HTTP_FORWARDED"])

        # As in Waitress, the newest element seeds host and proto, and any
        # port learned from X-Forwarded-Port is dropped.
        host, proto, port = elements[-1].host, elements[-1].proto, ""
        _rewrite_trusted(environ, "HTTP_FORWARDED", count)

        # Walk the trusted elements from newest to oldest: the oldest element
        # carrying a value wins, as it is what the client originally sent.
        for element in reversed(elements[-count:]):
            client_addr = element.for_ or client_addr
            host = element.host or host
            proto = element.proto or proto

    if proto:
        proto = proto.lower()
        if proto not in ("http", "https"):
            raise MalformedProxyHeader(
                "Forwarded Proto=" if forwarded else "X-Forwarded-Proto",
                "unsupported proto value",
                proto,
            )
        environ["wsgi.url_scheme"] = proto
        if not port:
            port = "80" if proto == "http" else "443"

    if host:
        if ":" in host and host[-1] != "]":
            # A port in the forwarded host beats X-Forwarded-Port and the
            # port implied by the protocol.
            name, port = host.rsplit(":", 1)
            environ["SERVER_NAME"] = name.strip()
            environ["HTTP_HOST"] = host
        else:
            environ["SERVER_NAME"] = host
            environ["HTTP_HOST"] = host
            scheme = environ["wsgi.url_scheme"]
            if port and (
                port not in ("80", "443")
                or (port == "80" and scheme != "http")
                or (port == "443" and scheme != "https")
            ):
                environ["HTTP_HOST"] = f"{host}:{port}"

    if port:
        environ["SERVER_PORT"] = str(port)

    if client_addr:
        if ":" in client_addr and client_addr[-1] != "]":
            addr, remote_port = client_addr.rsplit(":", 1)
            environ["REMOTE_ADDR"] = strip_brackets(addr.strip())
            environ["REMOTE_PORT"] = remote_port.strip()
        else:
            environ["REMOTE_ADDR"] = strip_brackets(client_addr.strip())
        environ["REMOTE_HOST"] = environ["REMOTE_ADDR"]

    return untrusted


def strip_brackets(addr):
    """``[::1]`` -> ``::1``; anything else is returned unchanged."""
    if addr[0] == "[" and addr[-1] == "]":
        return addr[1:-1]
    return addr


def clear_untrusted_headers(environ, untrusted_headers, log_warning=False, logger=logger):
    """Remove the untrusted proxy headers from ``environ``, optionally logging
    which ones were present."""
    removed = [
        name for name in untrusted_headers if environ.pop("HTTP_" + name, False) is not False
    ]
    if log_warning and removed:
        logger.warning(
            "Removed untrusted headers (%s). Waitress recommends these be removed upstream.",
            ", ".join("-".join(part.capitalize() for part in name.split("_")) for name in removed),
        )
