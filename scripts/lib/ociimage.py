#!/usr/bin/env python3
"""Write a deterministic single-layer OCI image archive FROM scratch, without a registry.

  ociimage.py OUT.tar NAME:TAG BINARY [--libs] [--ca-certs] [--user 65532:65532]
              [--label KEY=VALUE ...] [--port 5432/tcp ...]

BINARY goes to /<basename> and is the entrypoint. --libs adds the shared libraries `ldd`
names (and the dynamic loader) at their paths, so a glibc-linked binary runs; --ca-certs adds
/etc/ssl/certs/ca-certificates.crt. An empty /tmp (mode 1777) is always there. Every file has
mtime 0 and owner 0:0, so the digests depend only on the contents. The archive is an OCI
image layout whose index names the image (io.containerd.image.name), so
`ctr -n k8s.io images import OUT.tar` imports it as NAME:TAG.
"""
import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def shared_libraries(binary):
    """The absolute paths of the libraries and loader the binary needs, as ldd reports them."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if "not a dynamic executable" in out.stdout + out.stderr:
        return []
    if out.returncode != 0:
        sys.exit(f"ociimage: ldd {binary} failed: {out.stderr.strip()}")
    paths = []
    for line in out.stdout.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            paths.append(m.group(1))
        elif "not found" in line:
            sys.exit(f"ociimage: {binary} needs a library ldd cannot find: {line.strip()}")
    return sorted(set(paths))


def tar_bytes(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data, mode in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 0
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            ti.mode = mode
            if data is None:
                ti.type = tarfile.DIRTYPE
                t.addfile(ti)
            else:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def layer_entries(binary, libs, ca_certs):
    files = {os.path.basename(binary): (open(binary, "rb").read(), 0o755)}
    for lib in libs:
        # Keep the path the loader and the binary expect (e.g. /lib64/ld-linux-x86-64.so.2),
        # with the contents of the file the symlink points to.
        files[lib.lstrip("/")] = (open(os.path.realpath(lib), "rb").read(), 0o755)
    if ca_certs:
        files[CA_BUNDLE.lstrip("/")] = (open(CA_BUNDLE, "rb").read(), 0o644)
    dirs = {"tmp"}
    for name in files:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    entries = [(d, None, 0o1777 if d == "tmp" else 0o755) for d in sorted(dirs)]
    entries += [(name, data, mode) for name, (data, mode) in sorted(files.items())]
    return entries


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("ref", help="NAME:TAG the image is imported as")
    ap.add_argument("binary")
    ap.add_argument("--libs", action="store_true", help="add the shared libraries ldd names")
    ap.add_argument("--ca-certs", action="store_true", help=f"add {CA_BUNDLE}")
    ap.add_argument("--user", default="65532:65532")
    ap.add_argument("--label", action="append", default=[], help="KEY=VALUE image label")
    ap.add_argument("--port", action="append", default=[], help="exposed port, e.g. 5432/tcp")
    a = ap.parse_args()
    if ":" not in a.ref.rsplit("/", 1)[-1]:
        sys.exit("ociimage: the reference needs a tag (NAME:TAG)")
    labels = {}
    for kv in a.label:
        k, sep, v = kv.partition("=")
        if not sep:
            sys.exit(f"ociimage: --label wants KEY=VALUE, got {kv!r}")
        labels[k] = v

    layer = tar_bytes(layer_entries(a.binary, shared_libraries(a.binary) if a.libs else [], a.ca_certs))
    sha = lambda b: "sha256:" + hashlib.sha256(b).hexdigest()  # noqa: E731
    name = os.path.basename(a.binary)
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": ["/" + name], "User": a.user, "WorkingDir": "/",
                   "Env": ["PATH=/", "SSL_CERT_FILE=" + CA_BUNDLE] if a.ca_certs else ["PATH=/"],
                   "ExposedPorts": {p: {} for p in a.port}, "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/lib/ociimage.py " + name}],
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": len(layer)}],
        "annotations": labels,
    }, sort_keys=True).encode()
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest), "size": len(manifest),
        "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": a.ref, "org.opencontainers.image.ref.name": a.ref.rsplit(":", 1)[1]},
    }]}, sort_keys=True).encode()
    entries = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}', 0o644), ("index.json", index, 0o644),
               ("blobs", None, 0o755), ("blobs/sha256", None, 0o755)]
    entries += [("blobs/sha256/" + sha(b)[7:], b, 0o644) for b in (layer, config, manifest)]
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(tar_bytes(entries))
    os.replace(tmp, a.out)
    print(a.ref, sha(manifest), f"{len(layer)} bytes layer")


if __name__ == "__main__":
    main()
