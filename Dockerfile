# sse-hub container image.
#
#   docker build -t sse-hub .
#   docker run --rm -p 8080:8080 sse-hub
#   docker run --rm -p 8443:8080 -v ./certs:/certs:ro -e SSE_HUB_TLS_CERT=/certs/cert.pem \
#       -e SSE_HUB_TLS_KEY=/certs/key.pem sse-hub                      # HTTPS, HTTP/2
#
# Two stages: `builder` compiles the release binary on the official Rust image, and the runtime
# stage is Debian bookworm-slim holding that binary and nothing of the toolchain.
#
# Why bookworm-slim and not `scratch`: the builder is Debian bookworm too, so the dynamically
# linked binary finds the very glibc (2.36) it was linked against; name lookups go through
# glibc's NSS as usual, which `SSE_HUB_STORE=redis://redis:6379` needs and which
# a statically linked glibc binary cannot do reliably (musl would, but is a second toolchain);
# and `docker exec <c> sh` works when something needs looking at. It costs about 75 MB.
#
# docker/smoke-test builds this file unchanged without a registry: it compiles the binary on the
# host and stands a folder in for the `builder` stage (`--build-context builder=DIR`), so the
# runtime stage must take the binary from exactly /app/target/release/sse-hub.
# No `# syntax=` line, heredocs, `COPY --link` or cache mounts: older engines must build it too.

FROM rust:1.95-bookworm AS builder
WORKDIR /app

# Dependencies first, in a layer of their own that stays cached until a manifest, Cargo.lock or
# the vendored crates change: stub every source file the manifest names (and src/main.rs,
# src/lib.rs) and build. vendor/ holds the patched actix-http that Cargo.toml's
# [patch.crates-io] points at, so it must be there before this first build.
# Only the hub's binary: the image does not ship the sse-load tester. Cargo still reads every
# workspace member's manifest, so crates/sse-load/Cargo.toml comes too, with a stub main.rs
# that stays: .dockerignore keeps the tester's sources out of the context.
COPY Cargo.toml Cargo.lock ./
COPY crates/sse-load/Cargo.toml ./crates/sse-load/
COPY vendor ./vendor
RUN set -eu; \
    for stub in src/main.rs src/lib.rs crates/sse-load/src/main.rs \
            $(sed -n 's/^path *= *"\(.*\.rs\)"$/\1/p' Cargo.toml); do \
        mkdir -p "$(dirname "$stub")"; echo 'fn main() {}' > "$stub"; \
    done; \
    cargo build --release --locked --bin sse-hub; \
    rm -rf src

# Then the crate itself. COPY keeps the files' old mtimes, which can be older than the stub
# build: touch them, or cargo would take the stub binary for up to date. Not vendor/: it was
# built above, and touching it would rebuild actix-http and all that depends on it.
COPY . .
RUN find . -name '*.rs' -not -path './target/*' -not -path './vendor/*' -exec touch {} + \
    && cargo build --release --locked --bin sse-hub \
    && ./target/release/sse-hub --version | grep '^sse-hub '


FROM debian:bookworm-slim

# A fixed numeric id, so `runAsNonRoot` and host-side checks can verify it without /etc/passwd.
RUN groupadd --gid 10001 sse-hub \
    && useradd --uid 10001 --gid sse-hub --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin sse-hub

COPY --from=builder /app/target/release/sse-hub /usr/local/bin/sse-hub

# Where `--store file:/var/lib/sse-hub/history.redb` keeps the history, and where ACME keeps its
# account and certificates (`SSE_HUB_ACME_CACHE=/var/lib/sse-hub/acme`). Owned by the hub's user,
# so a named volume mounted here starts out writable by it (`-v sse-hub-data:/var/lib/sse-hub`).
# With ACME, mount a named volume on the cache (`-v sse-hub-acme:/var/lib/sse-hub/acme`), so a
# certificate survives a new container (and the CA's rate limits are not spent again) even when
# the history is kept in memory. No VOLUME line: it would leave an anonymous volume behind for
# every container, ACME or not.
RUN mkdir -p /var/lib/sse-hub/acme && chown -R 10001:10001 /var/lib/sse-hub

# Inside the image the hub listens on every interface; publish the port to choose who reaches
# it (`-p 127.0.0.1:8080:8080` for this host only).
ENV SSE_HUB_BIND=0.0.0.0:8080
EXPOSE 8080
USER 10001:10001

# The hub runs as PID 1 and handles SIGTERM itself: it ends every stream (subscribers reconnect
# elsewhere with Last-Event-ID) and exits within SSE_HUB_SHUTDOWN_TIMEOUT (1 s by default), well
# inside `docker stop`'s 10 s grace period.
STOPSIGNAL SIGTERM

# TLS (HTTP/2 and HTTP/1.1) with certificate files mounted read-only, reloaded when they change:
#   -v ./certs:/certs:ro -e SSE_HUB_TLS_CERT=/certs/cert.pem -e SSE_HUB_TLS_KEY=/certs/key.pem
# The files must be readable by uid 10001.

# `sse-hub healthcheck` asks /healthz on SSE_HUB_BIND, over TLS when SSE_HUB_TLS_CERT and
# SSE_HUB_TLS_KEY are set (the same variables the hub reads): no curl in the image.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/sse-hub", "healthcheck"]

ENTRYPOINT ["/usr/local/bin/sse-hub"]
