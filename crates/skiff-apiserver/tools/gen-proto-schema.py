#!/usr/bin/env python3
"""Writes the protobuf schema table of the Kubernetes API types (src/protobuf/schema.txt).

kubectl 1.32+ (client-go typed clients) sends request bodies as Kubernetes protobuf. The API
server decodes them with this table: for every message, its fields' numbers, JSON names
(go-to-protobuf names proto fields after the JSON field names) and types.

Usage: gen-proto-schema.py API_CHECKOUT APIMACHINERY_CHECKOUT > src/protobuf/schema.txt
where the checkouts are git clones of github.com/kubernetes/api and .../apimachinery (only
GA versions are read). Output format, one record a line:
    M <fully.qualified.Message>
    <number> <json name> <o|r|m|i> <type> [<map value type>]
(o: optional, r: repeated, m: map, i: an embedded Go struct whose fields JSON inlines).
Types are proto scalars or fully qualified message names.
"""
import re
import subprocess
import sys

SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float",
           "sint32", "sint64", "fixed32", "fixed64"}


def files(repo, pattern):
    out = subprocess.run(["git", "-C", repo, "ls-tree", "-r", "--name-only", "HEAD"],
                         capture_output=True, text=True, check=True).stdout.split()
    return [f for f in out if re.search(pattern, f)]


def show(repo, path):
    return subprocess.run(["git", "-C", repo, "show", f"HEAD:{path}"],
                          capture_output=True, text=True, check=True).stdout


FIELD = re.compile(r"^\s*(optional|repeated)\s+(\S+)\s+(\w+)\s*=\s*(\d+)")
MAP = re.compile(r"^\s*map<\s*(\S+)\s*,\s*(\S+)\s*>\s+(\w+)\s*=\s*(\d+)")


def qualify(package, name):
    if name in SCALARS:
        return name
    if name.startswith("."):
        return name[1:]
    return f"{package}.{name}"


EMBEDDED = re.compile(r'^\t\*?(?:\w+\.)?(\w+) `json:"(?:,inline)?(?:,omitempty)?" protobuf:"([^"]*)"')


def embedded_fields(repo, directory, package):
    """(message, proto field name) of the Go structs embedded with an inlined JSON name."""
    found = set()
    for path in files(repo, rf"^{re.escape(directory)}/[^/]+\.go$"):
        if path.endswith("_test.go") or "generated" in path:
            continue
        struct = None
        for line in show(repo, path).splitlines():
            m = re.match(r"^type (\w+) struct \{", line)
            if m:
                struct = m.group(1)
                continue
            m = EMBEDDED.match(line)
            if m and struct:
                name = re.search(r"name=(\w+)", m.group(2))
                field = name.group(1) if name else m.group(1)[0].lower() + m.group(1)[1:]
                found.add((f"{package}.{struct}", field))
    return found


def parse(text, out, inline=frozenset()):
    package = None
    message = None
    for line in text.splitlines():
        line = line.split("//")[0]
        m = re.match(r"^\s*package\s+([\w.]+);", line)
        if m:
            package = m.group(1)
            continue
        m = re.match(r"^\s*message\s+(\w+)\s*\{", line)
        if m:
            message = f"{package}.{m.group(1)}"
            out.append(f"M {message}")
            continue
        m = FIELD.match(line)
        if m and message:
            label = "o" if m.group(1) == "optional" else "r"
            if (message, m.group(3)) in inline:
                label = "i"
            out.append(f"{m.group(4)} {m.group(3)} {label} {qualify(package, m.group(2))}")
            continue
        m = MAP.match(line)
        if m and message:
            out.append(f"{m.group(4)} {m.group(3)} m {qualify(package, m.group(1))} "
                       f"{qualify(package, m.group(2))}")


def main():
    api, machinery = sys.argv[1], sys.argv[2]
    out = []
    for path in sorted(files(api, r"^[a-z]+/v\d+/generated\.proto$")):
        directory = path.rsplit("/", 1)[0]
        package = "k8s.io.api." + directory.replace("/", ".")
        parse(show(api, path), out, embedded_fields(api, directory, package))
    for path in ["pkg/apis/meta/v1/generated.proto", "pkg/runtime/generated.proto",
                 "pkg/util/intstr/generated.proto", "pkg/api/resource/generated.proto",
                 "pkg/runtime/schema/generated.proto"]:
        directory = path.rsplit("/", 1)[0]
        package = "k8s.io.apimachinery." + directory.replace("/", ".")
        parse(show(machinery, path), out, embedded_fields(machinery, directory, package))
    print("\n".join(out))


if __name__ == "__main__":
    main()
