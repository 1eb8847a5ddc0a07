# The secret-sidecar image: one fully static binary on distroless, run as a numeric
# non-root user.
#
#   docker build -t secret-sidecar:0.1.0 .
#   docker build --build-arg FEATURES=aws -t secret-sidecar:0.1.0-aws .   # one cloud, no webhook
#
# Static with musl rather than glibc: a glibc `+crt-static` binary links, but glibc's
# getaddrinfo still loads NSS modules at run time (the linker warns about it), and
# resolving the STS and Secrets Manager host names is the first thing this program does.
# musl resolves DNS itself. aws-lc-sys (the crypto under rustls) compiles its C and
# assembly with the cc crate, which for the musl target needs a musl C compiler: musl-gcc
# from musl-tools. It ships pregenerated bindings for x86_64-unknown-linux-musl, so neither
# clang nor bindgen nor cmake is needed.
#
# The final stage is distroless static, not scratch: TLS uses the system's CA bundle
# (rustls-native-certs), which distroless ships in /etc/ssl/certs, with /etc/passwd for
# the nonroot user 65532.

FROM rust:1.95.0-bookworm AS builder

# Build-stage tools never reach the final image, and the rust tag already fixes the Debian
# release; pinning the package's exact Debian revision would only break the build on the
# next point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl

ENV CC_x86_64_unknown_linux_musl=musl-gcc
WORKDIR /src

# The features to build, comma-separated (see [features] in Cargo.toml). Always with
# --no-default-features, so the image holds exactly these: by default the crate's own
# default, all three providers and the admission webhook (whose Deployment injects its own
# image, so one image serves both); "aws", "azure" or "gcp" alone for a slim single-cloud
# image without the webhook mode ("aws,webhook" to keep it).
ARG FEATURES=aws,azure,gcp,webhook

# Dependencies first, against stub sources: editing src/ then rebuilds only this crate.
# The test kit is a workspace member that a release build never compiles, but cargo
# reads its manifest to load the workspace: its manifest and an empty stub are enough.
COPY Cargo.toml Cargo.lock ./
COPY testkit/Cargo.toml testkit/
RUN mkdir src testkit/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs testkit/src/lib.rs \
    && cargo build --release --locked --target x86_64-unknown-linux-musl \
        --no-default-features --features "$FEATURES" \
    && rm -rf src

# The stubs' build is newer than the copied sources' timestamps: touch them so that cargo
# rebuilds the crate itself. --version proves the binary runs without a dynamic loader.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --target x86_64-unknown-linux-musl \
        --no-default-features --features "$FEATURES" \
    && cp target/x86_64-unknown-linux-musl/release/secret-sidecar /secret-sidecar \
    && /secret-sidecar --version \
    && mkdir -p /mountpoint/secrets

FROM gcr.io/distroless/static-debian12:nonroot

LABEL org.opencontainers.image.title="secret-sidecar" \
      org.opencontainers.image.description="Fetch secrets with workload identity into an in-memory directory, atomically, and exit" \
      org.opencontainers.image.version="0.1.0"

COPY --from=builder /secret-sidecar /usr/local/bin/secret-sidecar

# The default output directory, owned by the user that writes it. On ECS Fargate a task's
# bind-mount volume is created root-owned (0755) unless the image declares the same path
# as a VOLUME, in which case the volume starts as a copy of this directory, owner
# included; without it the non-root sidecar could not write there. Kubernetes and Docker
# volumes mounted over this path replace it.
COPY --from=builder --chown=65532:65532 /mountpoint/secrets/ /run/secrets/
VOLUME ["/run/secrets"]

USER 65532:65532

# A run-to-completion container: it exits as soon as the secrets are published, so there
# is nothing for a health check to probe. Said explicitly rather than left out.
HEALTHCHECK NONE

ENTRYPOINT ["/usr/local/bin/secret-sidecar"]
