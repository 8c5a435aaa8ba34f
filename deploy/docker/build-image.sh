#!/usr/bin/env bash
# Builds the container image quiver:<tag> FROM scratch, pulling nothing: the release binary plus
# exactly the shared libraries it links (its `ldd` closure, including the dynamic loader),
# running as the non-root user 10001 with a /data volume.
#
#   deploy/docker/build-image.sh BINARY [TAG]     (TAG defaults to the workspace version)
#
# The image has no shell: health checks use `quiver health --url ...` in exec form.
# OPENBLAS_CORETYPE is baked in when set here (older OpenBLAS builds misdetect some CPUs).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
bin=${1:?usage: build-image.sh BINARY [TAG]}
tag=${2:-$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo_root/Cargo.toml")}
[ -x "$bin" ] || { echo "build-image.sh: $bin is not an executable" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root"/{bin,etc/quiver/tls,tmp,data}
cp "$bin" "$root/bin/quiver"
strip "$root/bin/quiver" 2>/dev/null || true
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"   # -L resolves Debian's alternatives symlinks
done
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
printf 'root:x:0:0::/:/nonexistent\nquiver:x:10001:10001::/data:/nonexistent\n' > "$root/etc/passwd"
printf 'root:x:0:\nquiver:x:10001:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"
chmod 0700 "$root/etc/quiver/tls" "$root/data"

coretype=""
if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
    coretype="ENV OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE"
fi
cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY --chown=10001:10001 rootfs/ /
USER 10001:10001
ENV OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 RUST_LOG=info
$coretype
VOLUME /data
WORKDIR /data
EXPOSE 8277/tcp 7277/udp 7301/udp 9301/tcp
LABEL org.opencontainers.image.title="quiver" org.opencontainers.image.version="$tag"
ENTRYPOINT ["/bin/quiver"]
CMD ["--help"]
DOCKERFILE
docker build -q -t "quiver:$tag" "$ctx" >/dev/null
docker tag "quiver:$tag" quiver:latest
size=$(docker image inspect -f '{{.Size}}' "quiver:$tag")
echo "built quiver:$tag (and quiver:latest), $((size / 1000000)) MB"
