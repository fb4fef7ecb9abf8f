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
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p galley-cli --bin galley --features aws

FROM debian:bookworm-slim
COPY --from=build /src/target/release/galley /usr/local/bin/galley
# SageMaker mounts /opt/ml into the container and writes it as root; `train` leaves a failed
# job's reason in /opt/ml/output/failure, where SageMaker reads it.
EXPOSE 8080
ENTRYPOINT ["galley", "container"]
