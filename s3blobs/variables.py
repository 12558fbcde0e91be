"""Every S3BLOBS_* variable, with its default and meaning: the one table that
``s3blobs serve --help`` prints and the README's "Configuration" table matches (a
test holds them together). Add a variable here when you add it to the code."""

from __future__ import annotations

import textwrap
from typing import NamedTuple


class Variable(NamedTuple):
    name: str
    default: str  # as the README shows it (Markdown)
    meaning: str  # as the README shows it (Markdown)


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "S3BLOBS_BUCKET",
        "(required)",
        "the bucket; without it `s3blobs serve` runs an embedded S3 (see Run the registry)",
    ),
    Variable(
        "S3BLOBS_REGION",
        "boto3's",
        "the bucket's region",
    ),
    Variable(
        "S3BLOBS_ENDPOINT_URL",
        "AWS",
        "an S3-compatible endpoint (`http://` or `https://`)",
    ),
    Variable(
        "S3BLOBS_PREFIX",
        "none",
        "a key prefix for everything s3blobs writes",
    ),
    Variable(
        "S3BLOBS_PART_SIZE",
        "`16MiB`",
        "multipart part size, 5 MiB to 5 GiB; blobs up to 10,000 parts",
    ),
    Variable(
        "S3BLOBS_MAX_CONCURRENCY",
        "`4`",
        "parts uploading at once per writer",
    ),
    Variable(
        "S3BLOBS_MAX_BUFFER",
        "`512MiB`",
        "upload bytes the process may hold in memory at once (at least a part; by default"
        " also at least one writer's part x (concurrency + 2)); past it uploads are "
        "answered 429",
    ),
    Variable(
        "S3BLOBS_EQUAL_PARTS",
        "`auto`",
        "`true`: every part but the last is exactly the part size (Cloudflare R2 needs "
        "it); `false`: parts of any size from 5 MiB, so each byte is sent once; `auto`: "
        "`false` on AWS, `true` on a custom endpoint",
    ),
    Variable(
        "S3BLOBS_REDIRECT",
        "`true`",
        "serve blob GETs as 307 redirects to presigned URLs",
    ),
    Variable(
        "S3BLOBS_PRESIGN_EXPIRY",
        "`1200`",
        "presigned URL lifetime, seconds",
    ),
    Variable(
        "S3BLOBS_STORAGE_CLASS",
        "bucket default",
        "e.g. `STANDARD_IA`, `INTELLIGENT_TIERING`",
    ),
    Variable(
        "S3BLOBS_SSE",
        "bucket default",
        "`none`, `AES256` or `aws:kms`",
    ),
    Variable(
        "S3BLOBS_SSE_KMS_KEY_ID",
        "none",
        "the KMS key, with `S3BLOBS_SSE=aws:kms`",
    ),
    Variable(
        "S3BLOBS_ADDRESSING_STYLE",
        "`auto`",
        "`auto`, `virtual` or `path` (most S3-compatible stores want `path`)",
    ),
    Variable(
        "S3BLOBS_CACHE",
        "`memory`",
        "where the descriptor, data-location and manifest caches live: `memory` (each "
        "process its own), or `redis://[[user]:password@]host[:port][/db]` (`rediss://` "
        "for TLS), one Redis for every replica (see [Running many "
        "replicas](#running-many-replicas))",
    ),
    Variable(
        "S3BLOBS_CACHE_SIZE",
        "`10000`",
        "descriptors cached in memory (`from_env`); `0` turns the descriptor cache off, "
        "on either backend",
    ),
    Variable(
        "S3BLOBS_CACHE_TTL",
        "`60`",
        "seconds a cached descriptor lives: how long another process's delete can go "
        "unseen with `memory` (with Redis, deletes are seen at once)",
    ),
    Variable(
        "S3BLOBS_GC_GRACE",
        "`1h`",
        "gc's default grace (`90s`, `30m`, `2h`, `7d`); the registry refreshes a link it "
        "confirms once older than half of it; at least `S3BLOBS_CACHE_TTL`",
    ),
    Variable(
        "S3BLOBS_TRUSTED_PROXIES",
        "none",
        "addresses or networks (`127.0.0.1,10.0.0.0/8`) whose `X-Forwarded-*` headers the"
        " registry believes (`create_app()`, `deploy/gunicorn.conf.py`)",
    ),
    Variable(
        "S3BLOBS_AUTH",
        "`none`",
        "`none`, `htpasswd` or `token` (see [Securing the registry](#securing-the-registry))",
    ),
    Variable(
        "S3BLOBS_AUTH_HTPASSWD",
        "none",
        "the htpasswd file (bcrypt entries), with `S3BLOBS_AUTH=htpasswd`",
    ),
    Variable(
        "S3BLOBS_AUTH_TOKEN_REALM",
        "none",
        "the token server's URL, sent in Bearer challenges",
    ),
    Variable(
        "S3BLOBS_AUTH_TOKEN_SERVICE",
        "none",
        "this registry's name: a token's `aud` must hold it",
    ),
    Variable(
        "S3BLOBS_AUTH_TOKEN_ISSUER",
        "none",
        "the token server's name: a token's `iss`",
    ),
    Variable(
        "S3BLOBS_AUTH_TOKEN_KEYS",
        "none",
        "PEM public keys or certificates, or a JWKS, that sign tokens",
    ),
    Variable(
        "S3BLOBS_AUTH_TOKEN_ALGORITHMS",
        "`RS256,ES256,EdDSA`",
        "the signature algorithms accepted (asymmetric only)",
    ),
    Variable(
        "S3BLOBS_ACL",
        "none",
        "TOML access rules per repository",
    ),
    Variable(
        "S3BLOBS_TLS_CERT",
        "none",
        "serve HTTPS with this certificate (chain), with `S3BLOBS_TLS_KEY`",
    ),
    Variable(
        "S3BLOBS_TLS_KEY",
        "none",
        "the certificate's private key",
    ),
    Variable(
        "S3BLOBS_METRICS_ADDR",
        "off",
        "serve Prometheus metrics on `HOST:PORT` (`:PORT` for every interface), apart "
        "from the registry's port; `s3blobs serve --metrics-addr`",
    ),
    Variable(
        "S3BLOBS_LOG_FORMAT",
        "`text`",
        "`text` or `json` (one object per line)",
    ),
    Variable(
        "S3BLOBS_LOG_LEVEL",
        "`info`",
        "`debug`, `info` (one access line per request), `warning`, `error`, `critical`",
    ),
    Variable(
        "S3BLOBS_NOTIFY_URLS",
        "none",
        "comma-separated `http(s)://` endpoints that receive push/delete events",
    ),
    Variable(
        "S3BLOBS_NOTIFY_HEADERS",
        "none",
        "extra headers per endpoint: a JSON object, or the path of a TOML file, mapping "
        "an endpoint URL (or `*` for all) to `{header: value}`",
    ),
    Variable(
        "S3BLOBS_NOTIFY_PULLS",
        "`false`",
        "also send manifest and blob pull events",
    ),
)


def plain(markdown: str) -> str:
    """A README cell as a terminal shows it: without the backticks."""
    return markdown.replace("`", "")


def help_text() -> str:
    """The variables as ``serve --help`` lists them: name, default, then meaning."""
    width = max(len(v.name) for v in VARIABLES)
    lines = ["configuration (environment variables, read by every command):"]
    indent = " " * (width + 4)
    for variable in VARIABLES:
        lines.append(f"  {variable.name:<{width}}  default: {plain(variable.default)}")
        lines += textwrap.wrap(
            plain(variable.meaning), 79, initial_indent=indent, subsequent_indent=indent
        )
    return "\n".join(lines)
