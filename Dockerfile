# Multi-stage build: compile with the Rust toolchain, ship a slim Debian with HAProxy (for --mode haproxy).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# gtmpl with rattan's Go-compatibility fixes ([patch.crates-io] in Cargo.toml).
COPY vendor ./vendor
COPY config ./config
RUN cargo build --release --locked --bin rattan

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends haproxy ca-certificates libcap2-bin \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/rattan --create-home --shell /usr/sbin/nologin rattan
COPY --from=build /src/target/release/rattan /usr/local/bin/rattan
# Ports 80/443 without root.
RUN setcap cap_net_bind_service=+ep /usr/local/bin/rattan
COPY config /etc/rattan
USER rattan
WORKDIR /var/lib/rattan
ENV RATTAN_DATA_DIR=/var/lib/rattan
EXPOSE 80 443 8000
# Bamboo's way of running works unchanged:
#   docker run -p 8000:8000 -p 80:80 -e MARATHON_ENDPOINT=http://m1:8080,http://m2:8080 \
#     -e BAMBOO_ENDPOINT=http://host:8000 -e BAMBOO_ZK_HOST=zk1:2181,zk2:2181 -e BAMBOO_ZK_PATH=/bamboo \
#     -e BIND=:8000 rattan
ENTRYPOINT ["/usr/local/bin/rattan"]
CMD ["run"]
