#!/usr/bin/env python3
"""A Stile control-plane client in Python (grpcio), generated from proto/.

Shows that the ``stile.v1`` API is usable from another language with nothing
but the ``.proto`` files: the stubs are generated with ``grpc_tools.protoc``
into a temporary directory at run time, never committed.

It starts nothing itself. The Rust test ``crates/control/tests/python_client.rs``
starts a control plane, publishes an asset, and runs this script with:

``STILE_CONTROL_ADDR``
    ``host:port`` of the control plane (plaintext gRPC unless ``STILE_CA_FILE``).
``STILE_CA_FILE`` (optional)
    PEM CA bundle: connect over TLS (``grpc.ssl_channel_credentials``) and
    verify the control plane's certificate against it and the host of
    ``STILE_CONTROL_ADDR``.
``STILE_MINTER_KEY``
    API key with role ``minter`` (or ``admin``).
``STILE_ASSET_ID``
    Id of a PUBLISHED asset.
``STILE_OPERATOR_KEY`` (optional)
    API key with role ``operator``; if set, the minted link is revoked too.

It then:

1. mints one link (subject, channel, TTL) and checks the response's shape;
2. checks that a call without an API key fails with UNAUTHENTICATED and that
   an unknown asset fails with NOT_FOUND;
3. revokes the link by token id when an operator key is given;

and prints one JSON object on stdout: the minted link's fields (including the
token, which the Rust side verifies with the token crate) and the revocation
version. Exit status 0 on success, 1 on a failed check, 2 on bad usage.

Usage::

    python3 -m pip install -r tests/python/requirements.txt
    STILE_CONTROL_ADDR=127.0.0.1:7400 STILE_MINTER_KEY=stk_... STILE_ASSET_ID=abc \\
        python3 tests/python/test_grpc_client.py
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"


def generate_stubs(out_dir: pathlib.Path) -> None:
    """Runs protoc (from grpcio-tools) over every stile/v1 proto into out_dir."""
    from grpc_tools import protoc  # imported late: a clear error if missing

    import grpc_tools

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "stile" / "v1").glob("*.proto"))
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")
    # Generated modules import each other as `stile.v1.x_pb2`: make them packages.
    for pkg in (out_dir / "stile", out_dir / "stile" / "v1"):
        (pkg / "__init__.py").touch()


def check(cond: bool, message: str) -> None:
    if not cond:
        print(f"FAIL: {message}", file=sys.stderr)
        raise SystemExit(1)


def main() -> int:
    try:
        addr = os.environ["STILE_CONTROL_ADDR"]
        minter_key = os.environ["STILE_MINTER_KEY"]
        asset_id = os.environ["STILE_ASSET_ID"]
    except KeyError as missing:
        print(f"usage: set {missing.args[0]} (see this script's docstring)", file=sys.stderr)
        return 2
    operator_key = os.environ.get("STILE_OPERATOR_KEY")
    ca_file = os.environ.get("STILE_CA_FILE")

    import grpc

    def open_channel():
        if not ca_file:
            return grpc.insecure_channel(addr)
        with open(ca_file, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        return grpc.secure_channel(addr, credentials)

    with tempfile.TemporaryDirectory(prefix="stile-pystubs-") as tmp:
        out = pathlib.Path(tmp)
        generate_stubs(out)
        sys.path.insert(0, str(out))
        links_pb2 = importlib.import_module("stile.v1.links_pb2")
        links_grpc = importlib.import_module("stile.v1.links_pb2_grpc")
        changes_pb2 = importlib.import_module("stile.v1.changes_pb2")
        revocations_pb2 = importlib.import_module("stile.v1.revocations_pb2")
        revocations_grpc = importlib.import_module("stile.v1.revocations_pb2_grpc")

        with open_channel() as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=10)
            except grpc.FutureTimeoutError:
                check(False, f"no channel to {addr} within 10 s (down, or its certificate does not verify)")
            links = links_grpc.LinkServiceStub(channel)
            minter = (("authorization", f"Bearer {minter_key}"),)

            request = links_pb2.MintRequest(
                asset_id=asset_id, subject="py-viewer", channel="email", ttl_secs=900
            )
            link = links.Mint(request, metadata=minter, timeout=10).link
            check(len(link.token_id) == 16, f"token_id {link.token_id!r} is 16 hex digits")
            check(link.expires_at - link.issued_at == 900, "TTL honoured")
            check(link.query_url.endswith(f"?st={link.token}"), "query transport carries the token")
            check(f"/_st/{link.token}/" in link.path_url, "path transport carries the token")
            check(link.cookie.value == link.token and link.cookie.name, "cookie transport carries the token")

            try:
                links.Mint(request, timeout=10)
                check(False, "a call without an API key must fail")
            except grpc.RpcError as err:
                check(err.code() == grpc.StatusCode.UNAUTHENTICATED, f"no key: got {err.code()}")
            try:
                links.Mint(links_pb2.MintRequest(asset_id="no-such-asset"), metadata=minter, timeout=10)
                check(False, "an unknown asset must fail")
            except grpc.RpcError as err:
                check(err.code() == grpc.StatusCode.NOT_FOUND, f"unknown asset: got {err.code()}")
                check("no-such-asset" in err.details(), "the message names the asset")

            revoked_version = 0
            if operator_key:
                revocations = revocations_grpc.RevocationServiceStub(channel)
                target = changes_pb2.RevocationTarget(token_id=link.token_id)
                response = revocations.Revoke(
                    revocations_pb2.RevokeRequest(target=target, reason="python client test"),
                    metadata=(("authorization", f"Bearer {operator_key}"),),
                    timeout=10,
                )
                check(response.version > 0, "revocation has a log version")
                check(response.revocation.target.token_id == link.token_id, "revocation names the token")
                revoked_version = response.version

    print(
        json.dumps(
            {
                "token": link.token,
                "token_id": link.token_id,
                "issued_at": link.issued_at,
                "expires_at": link.expires_at,
                "key_id": link.key_id,
                "scope": link.scope,
                "query_url": link.query_url,
                "path_url": link.path_url,
                "revoked_version": revoked_version,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
