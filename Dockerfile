# Galley's container image: `galley container train` and `galley container serve`, which
# follow SageMaker's training and inference contract (SageMaker runs `IMAGE train` and
# `IMAGE serve`, with the job's files under /opt/ml and the model server on port 8080).
# Use it as `stages.training.image` for `compute: managed`, and to serve on SageMaker:
#
#   docker build -t galley .
#   aws ecr create-repository --repository-name galley
#   docker tag galley ACCOUNT.dkr.ecr.REGION.amazonaws.com/galley:0.1
#   docker push ACCOUNT.dkr.ecr.REGION.amazonaws.com/galley:0.1
#
# The `aws` feature is built: the container contract (`galley container`) is the aws platform's
# (SageMaker's `/opt/ml` layout), and the image reads the artifact store in S3.
#
# Without Docker or a registry to pull from, `providers/aws/scripts/image BINARY TAG` builds the
# same layout and entrypoint FROM scratch with buildah (what CI builds, runs and pushes).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p galley-cli --bin galley --features aws

FROM debian:bookworm-slim
# TLS to AWS: the SDK trusts the system's CA bundle.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/galley /usr/local/bin/galley
# SageMaker mounts /opt/ml into the container and writes it as root; `train` leaves a failed
# job's reason in /opt/ml/output/failure, where SageMaker reads it.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/galley", "container"]
