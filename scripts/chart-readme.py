#!/usr/bin/env python3
"""The values table of charts/portcullis/README.md, generated from values.schema.json.

    scripts/chart-readme.py            # rewrite the table between the markers
    scripts/chart-readme.py --check    # exit 1, with a diff, when the README has drifted

One row per leaf of the schema (objects with `properties` are walked; objects without, such
as resources or affinity, are one row): the key, its type, its default and its description.
Both modes also fail when a default in values.yaml differs from the schema's `default`, or
when values.yaml has a key the schema does not describe, so the three cannot disagree.
"""

import argparse
import difflib
import json
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "portcullis"
START, END = "<!-- values:start -->", "<!-- values:end -->"
SKIP = {"global"}  # set by parent charts; not ours to document
MISSING = object()


def resolve(node, schema):
    """The node with a local `$ref` merged in; the node's own keys win (description, default)."""
    ref = node.get("$ref")
    if not ref:
        return node
    if not ref.startswith("#/definitions/"):
        sys.exit(f"chart-readme: unsupported $ref {ref}")
    target = resolve(schema["definitions"][ref.removeprefix("#/definitions/")], schema)
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def leaves(node, schema, prefix=""):
    """(key, resolved schema) for every documented leaf, in schema order."""
    for name, child in node.get("properties", {}).items():
        if not prefix and name in SKIP:
            continue
        child = resolve(child, schema)
        key = f"{prefix}{name}"
        if "properties" in child:
            yield from leaves(child, schema, key + ".")
        else:
            yield key, child


def lookup(values, key):
    for part in key.split("."):
        if not isinstance(values, dict) or part not in values:
            return MISSING
        values = values[part]
    return values


def value_keys(values, prefix=""):
    """Every key path of values.yaml, descending into maps."""
    for name, child in values.items():
        key = f"{prefix}{name}"
        yield key
        if isinstance(child, dict):
            yield from value_keys(child, key + ".")


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(schema):
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, node in leaves(schema, schema):
        if "default" not in node or "description" not in node:
            sys.exit(f"chart-readme: {key} needs a default and a description in values.schema.json")
        kind = node.get("type", "")
        kind = "/".join(kind) if isinstance(kind, list) else kind
        if "enum" in node:
            kind += " (" + ", ".join(json.dumps(e) for e in node["enum"]) + ")"
        default = json.dumps(node["default"], separators=(", ", ": "))
        rows.append(f"| `{key}` | {cell(kind)} | `{cell(default)}` | {cell(node['description'])} |")
    return "\n".join(rows)


def check_values(schema, values):
    """Problems between values.yaml and the schema's defaults."""
    problems = []
    documented = set()
    for key, node in leaves(schema, schema):
        documented.add(key)
        got = lookup(values, key)
        if got is MISSING:
            problems.append(f"values.yaml has no {key} (schema default {json.dumps(node.get('default'))})")
        elif got != node.get("default"):
            problems.append(f"{key}: values.yaml says {json.dumps(got)}, the schema's default is {json.dumps(node.get('default'))}")
    for key in value_keys(values):
        if key not in documented and not any(d.startswith(key + ".") for d in documented) \
                and not any(key.startswith(d + ".") for d in documented):
            problems.append(f"values.yaml has {key}, which values.schema.json does not describe")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail on drift instead of writing")
    args = parser.parse_args()

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text()) or {}
    problems = check_values(schema, values)
    for p in problems:
        print(f"chart-readme: {p}", file=sys.stderr)

    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    if readme.count(START) != 1 or readme.count(END) != 1 or readme.index(START) > readme.index(END):
        sys.exit(f"chart-readme: {readme_path} needs one {START} … {END} pair")
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    wanted = f"{head}{START}\n{table(schema)}\n{END}{tail}"

    if args.check:
        if wanted != readme:
            sys.stdout.writelines(difflib.unified_diff(
                readme.splitlines(True), wanted.splitlines(True),
                str(readme_path.relative_to(ROOT)), "generated from values.schema.json"))
            print("chart-readme: the values table is stale; run scripts/chart-readme.py", file=sys.stderr)
            return 1
    elif wanted != readme:
        readme_path.write_text(wanted)
        print(f"chart-readme: wrote {readme_path.relative_to(ROOT)}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
