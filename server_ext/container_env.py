"""A local container's environment: from an allow-list, never the server's environment minus a few names.

The server's environment holds its token (JUPYTER_TOKEN), cloud credentials
(AWS_*, GOOGLE_*), proxies with passwords and whatever its operator exported;
none of it reaches a container unless it is named here or in the server's
CELLHOP_PASS_ENV (comma-separated names, or prefixes ending in '*', e.g.
`CELLHOP_PASS_ENV=HTTPS_PROXY,HF_*`). What is passed is what a kernel needs to
find its programs, libraries and locale, and the CA bundles for TLS. The
runtime adds its own variables on top (HOME inside the container, GPUs, limits,
the container's id, the image's environment, the spec's `env`, secrets).
"""

from __future__ import annotations

import fnmatch
import os
import site
import sys

PASS_ENV = "CELLHOP_PASS_ENV"
PASSED = (
    "PATH", "LANG", "LANGUAGE", "TERM", "COLORTERM", "TZ", "LC_*",
    "LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH", "NVIDIA_DRIVER_CAPABILITIES",
    "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV",
    "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONNOUSERSITE", "PYTHONSAFEPATH", "PYTHONIOENCODING",
    "PYTHONUTF8", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PYTHONHASHSEED",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "CELLHOP_PROXY_BASE",  # the Jupyter server's base URL path, for cellhop.forward (kernel/forward.py)
)


def passed_names(environ: dict[str, str] | None = None) -> list[str]:
    """The allow-list: PASSED and the operator's CELLHOP_PASS_ENV."""
    environ = os.environ if environ is None else environ
    extra = [n.strip() for n in environ.get(PASS_ENV, "").split(",") if n.strip()]
    return [*PASSED, *extra]


def allowed_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The server's variables a container may see."""
    environ = dict(os.environ if environ is None else environ)
    patterns = passed_names(environ)
    exact = {p for p in patterns if not p.endswith("*")}
    prefixes = [p for p in patterns if p.endswith("*")]
    env = {k: v for k, v in environ.items()
           if k in exact or any(fnmatch.fnmatchcase(k, p) for p in prefixes)}
    if PASS_ENV in environ:
        env[PASS_ENV] = environ[PASS_ENV]  # a container that starts containers passes the same on
    # the user's site-packages the server imports from: found through HOME, which a container has its own of
    user_site = getattr(site, "USER_SITE", None)
    if "PYTHONUSERBASE" not in env and site.ENABLE_USER_SITE and user_site in sys.path:
        env["PYTHONUSERBASE"] = site.getuserbase()
    return env
