# syntax=docker/dockerfile:1
# The release image of Portcullis: the `portcullis` binary (operator, proxy and CLI) alone.
#
#   docker build --build-arg VERSION=0.1.0 -t ghcr.io/portcullis/portcullis:0.1.0 .
#
# Base images are pinned by exact version tag. For a reproducible release pin them by
# digest too: `docker buildx imagetools inspect rust:1.95.0-bookworm` prints the index
# digest; write it as `FROM rust:1.95.0-bookworm@sha256:<digest>` (same for the runtime
# image below) and let Renovate/Dependabot bump both together.

FROM rust:1.95.0-bookworm AS build
WORKDIR /src
# Only what the build reads (see .dockerignore): the manifest, the lock file, the sources, and
# benches/ because Cargo.toml declares its [[bench]] targets.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The registry and target directories are cache mounts, so the binary is copied out of the
# target mount within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin portcullis && \
    install -D -m 0755 target/release/portcullis /out/portcullis

# distroless/cc, not scratch: the binary is linked against glibc (the Rust default on
# x86_64-unknown-linux-gnu), and cc-debian12 carries exactly glibc, libgcc and the CA
# certificates (for AWS and the Kubernetes API) — no shell, no package manager. The :nonroot
# variant runs as uid/gid 65532, the same ids the chart's securityContext sets.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="portcullis" \
      org.opencontainers.image.description="Identity-aware, audited access to AWS databases: a Kubernetes operator and proxy" \
      org.opencontainers.image.source="https://github.com/portcullis/portcullis" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/portcullis /portcullis
USER 65532:65532
ENTRYPOINT ["/portcullis"]
