"""Validates speedscope files against speedscope's own file-format JSON schema (from its npm
package, see setup_venv.sh) with `jsonschema`. Prints `valid FILE` per file; exits 1 with the
first violation otherwise.

Usage: python check_speedscope.py SCHEMA FILE..."""

import json
import sys

import jsonschema


def main():
    with open(sys.argv[1]) as f:
        schema = json.load(f)
    validator = jsonschema.Draft7Validator(schema)
    for path in sys.argv[2:]:
        with open(path) as f:
            document = json.load(f)
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
        if errors:
            print(f"{path}: {errors[0].message} at {list(errors[0].path)}", file=sys.stderr)
            sys.exit(1)
        print(f"valid {path}")


if __name__ == "__main__":
    main()
