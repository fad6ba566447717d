# Multi-stage build of the `herald` binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
RUN cargo build --release --locked --bin herald

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 herald
COPY --from=build /src/target/release/herald /usr/local/bin/herald
USER herald
ENV HERALD_LISTEN=0.0.0.0:8888
EXPOSE 8888
HEALTHCHECK --interval=5s --timeout=2s --retries=10 CMD curl -fsS http://127.0.0.1:8888/readyz || exit 1
ENTRYPOINT ["herald"]
CMD ["serve"]
