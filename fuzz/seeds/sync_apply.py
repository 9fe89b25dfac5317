#!/usr/bin/env python3
"""Writes the seed corpus of the `sync_apply` fuzz target.

    python3 fuzz/seeds/sync_apply.py      # -> fuzz/corpus/sync_apply/seed-*

Messages are built from the .proto files (stubs generated with grpcio-tools
into a temporary directory), so the seeds follow the schema. The first byte of
each seed selects the target's mode (see fuzz/fuzz_targets/sync_apply.rs):
0 one ControlMessage, 1 a sequence of length-prefixed ControlMessages,
2 structured 8-byte operations.
"""

import importlib
import pathlib
import struct
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"
OUT = REPO / "fuzz" / "corpus" / "sync_apply"


def stubs(out_dir: pathlib.Path):
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "stile" / "v1").glob("*.proto"))
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    if protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out_dir}", *protos]) != 0:
        raise SystemExit("protoc failed")
    for pkg in (out_dir / "stile", out_dir / "stile" / "v1"):
        (pkg / "__init__.py").touch()
    sys.path.insert(0, str(out_dir))
    return importlib.import_module("stile.v1.edges_pb2"), importlib.import_module("stile.v1.changes_pb2")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        e, c = stubs(pathlib.Path(tmp))

        def rev(version, expires_at=0, **target):
            return c.Revocation(
                version=version, target=c.RevocationTarget(**target), reason="seed", actor="ops", expires_at=expires_at
            )

        token = dict(token_id="00000000000000ff")
        subject = dict(subject=c.SubjectTarget(subject="viewer-1", issued_before=1_700_000_000))
        prefix = dict(path_prefix=c.PathPrefixTarget(prefix="/vod/abc/", issued_before=1_700_000_000))
        purge = dict(path_prefix=c.PathPrefixTarget(prefix="/vod/abc/", issued_before=1_700_000_000, purge=True))
        key_rev = dict(key_id=1)

        def delta(version, revocation=None, key_change=None, key=None):
            change = c.Change(version=version, at=1_700_000_000, actor="ops")
            if revocation is not None:
                change.revocation.CopyFrom(revocation)
            if key_change is not None:
                change.key.CopyFrom(key_change)
            d = e.Delta(change=change)
            if key is not None:
                d.key.CopyFrom(key)
            return e.ControlMessage(delta=d)

        def edge_key(key_id, state):
            return e.EdgeKey(key_id=key_id, state=state, secret=bytes([key_id]) * 32)

        snapshot = e.ControlMessage(
            snapshot=e.Snapshot(
                version=7,
                keys=[edge_key(1, c.KEY_STATE_ACTIVE), edge_key(2, c.KEY_STATE_PENDING)],
                revocations=[
                    rev(3, 1_700_003_600, **token),
                    rev(4, 1_700_090_000, **subject),
                    rev(5, 0, **prefix),
                    rev(6, 1_700_090_000, **purge),
                    rev(7, 0, key_id=9),
                ],
            )
        )
        # Deltas at version 11: the target's populated model is at version 10.
        singles = {
            "snapshot": snapshot,
            "delta-token-id": delta(11, rev(11, 1_700_003_600, **token)),
            "delta-subject": delta(11, rev(11, 1_700_090_000, **subject)),
            "delta-prefix": delta(11, rev(11, 0, **prefix)),
            "delta-key-id": delta(11, rev(11, 0, **key_rev)),
            "delta-purge": delta(11, rev(11, 1_700_090_000, **purge)),
            "delta-key-pending": delta(
                11, key_change=c.KeyChange(key_id=5, state=c.KEY_STATE_PENDING), key=edge_key(5, c.KEY_STATE_PENDING)
            ),
            "delta-key-active": delta(11, key_change=c.KeyChange(key_id=1, state=c.KEY_STATE_ACTIVE)),
            "delta-key-retired": delta(11, key_change=c.KeyChange(key_id=1, state=c.KEY_STATE_RETIRED)),
            "heartbeat": e.ControlMessage(
                heartbeat=e.Heartbeat(cp_time_ms=1_700_000_000_000, current_version=11, seq=4, rtt_ms=2)
            ),
        }
        OUT.mkdir(parents=True, exist_ok=True)
        for name, msg in singles.items():
            (OUT / f"seed-{name}").write_bytes(b"\x00" + msg.SerializeToString())

        # A session: a snapshot, then deltas in order, a duplicate, a gap, an older snapshot.
        sequence = [
            snapshot,
            delta(8, rev(8, 1_700_003_600, **token)),
            delta(9, key_change=c.KeyChange(key_id=3, state=c.KEY_STATE_PENDING), key=edge_key(3, c.KEY_STATE_PENDING)),
            delta(10, rev(10, 0, **purge)),
            delta(10, rev(10, 0, **purge)),
            delta(12, rev(12, 0, **subject)),
            e.ControlMessage(snapshot=e.Snapshot(version=6)),
            delta(11, key_change=c.KeyChange(key_id=2, state=c.KEY_STATE_RETIRED)),
            delta(12, rev(12, 0, **key_rev)),
        ]
        body = b"".join(struct.pack("<H", len(m.SerializeToString())) + m.SerializeToString() for m in sequence)
        (OUT / "seed-sequence").write_bytes(b"\x01" + body)

        # Structured operations (mode 2): a mix of snapshots, revocations, key changes.
        ops = bytes(
            [
                *[1, 3, 0, 10, 0, 0, 1, 0],  # delta, next version, token id
                *[1, 3, 2, 10, 1, 0, 3, 0],  # delta, subject
                *[1, 3, 4, 10, 2, 1, 5, 0],  # delta, prefix with purge
                *[2, 3, 0, 0, 1, 2, 7, 1],  # key 2 pending with material
                *[2, 3, 0, 0, 4, 2, 0, 0],  # key 2 retired
                *[0, 1, 0, 0, 0, 2, 9, 0x83],  # older snapshot with reset
                *[3, 2, 0, 0, 0, 0, 0, 0],  # heartbeat
            ]
        )
        (OUT / "seed-ops").write_bytes(b"\x02" + ops)
        print(f"wrote {len(singles) + 2} seeds to {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
