# Multi-stage build: compile with the Rust toolchain, ship a slim Debian with HAProxy (for --mode haproxy).
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, against stub sources: this layer is rebuilt only when Cargo.toml, Cargo.lock or the vendored
# crate change, not on every source edit.
COPY Cargo.toml Cargo.lock build.rs ./
# gtmpl with rattan's Go-compatibility fixes ([patch.crates-io] in Cargo.toml).
COPY vendor ./vendor
COPY benches ./benches
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin rattan \
 && rm -rf src
COPY src ./src
COPY config ./config
# The commit for rattan_build_info (no .git in the build context): docker build --build-arg RATTAN_COMMIT=$(git rev-parse --short=12 HEAD)
ARG RATTAN_COMMIT=unknown
ENV RATTAN_COMMIT=${RATTAN_COMMIT}
# Touched so cargo rebuilds the crate over the stub's artifacts.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin rattan

FROM debian:bookworm-slim
# tini as PID 1 reaps what reload commands leave behind (a daemonized HAProxy's parent exits; its children are
# re-parented to PID 1). libcap2-bin is only for setcap and is removed in the same layer.
COPY --from=build /src/target/release/rattan /usr/local/bin/rattan
RUN apt-get update \
 && apt-get install -y --no-install-recommends haproxy ca-certificates curl tini libcap2-bin \
 && setcap cap_net_bind_service=+ep /usr/local/bin/rattan \
 && apt-get purge -y libcap2-bin \
 && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/rattan --create-home --shell /usr/sbin/nologin rattan
COPY config /etc/rattan
USER rattan
WORKDIR /var/lib/rattan
# The rules file, the callback token and, in sidecar mode, haproxy.cfg: all in the data volume, writable by the
# non-root user (HAProxy's /etc/haproxy is not).
ENV RATTAN_DATA_DIR=/var/lib/rattan \
    HAPROXY_OUTPUT_PATH=/var/lib/rattan/haproxy.cfg
VOLUME ["/var/lib/rattan"]
EXPOSE 80 443 8000
# Ready: a Marathon snapshot served, rules loaded (and in sidecar mode the config applied). The API port is BIND or
# --api-bind; this checks the default.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8000/readyz"]
# Bamboo's way of running works unchanged:
#   docker run -p 8000:8000 -p 80:80 -e MARATHON_ENDPOINT=http://m1:8080,http://m2:8080 \
#     -e BAMBOO_ENDPOINT=http://host:8000 -e BAMBOO_ZK_HOST=zk1:2181,zk2:2181 -e BAMBOO_ZK_PATH=/bamboo \
#     -e BIND=:8000 rattan
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/rattan"]
CMD ["run"]
