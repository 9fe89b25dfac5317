"""Mints Akamai EdgeAuth tokens with Akamai's own generator (the
`akamai-edgeauth` package from PyPI), for the tests that compare against it
(`stile_tests::akamai::vendor_tokens`, tests/support/akamai.rs).

Reads a JSON array of cases on stdin, each {"opts": {EdgeAuth keyword
arguments}, "acl": str | [str] } or {"opts": ..., "url": str}, and prints a
JSON array with the token of each case. Nothing here implements the format:
it only calls the vendor's library.
"""

import json
import sys

from akamai.edgeauth import EdgeAuth


def main() -> None:
    cases = json.load(sys.stdin)
    out = []
    for case in cases:
        ea = EdgeAuth(**case["opts"])
        if "acl" in case:
            out.append(ea.generate_acl_token(case["acl"]))
        else:
            out.append(ea.generate_url_token(case["url"]))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
