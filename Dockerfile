# switchboard image: `serve` by default; `migrate` and `echo` are the other
# commands of the same binary (docker run IMAGE echo).
#
# Not built in CI here (that machine has no Docker engine); see README.md.

# --- build -------------------------------------------------------------------
FROM golang:1.26 AS build
WORKDIR /src

# Dependencies first, so source edits do not refetch modules.
COPY go.mod go.sum ./
RUN go mod download

COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /switchboard ./cmd/switchboard

# --- run ---------------------------------------------------------------------
# Alpine rather than distroless: its busybox wget is what the compose
# healthcheck calls on /healthz, and its CA bundle serves amqps:// and
# sslmode=require URLs.
FROM alpine:3
RUN addgroup -S -g 10001 switchboard \
 && adduser -S -D -H -u 10001 -G switchboard switchboard
COPY --from=build /switchboard /switchboard
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/switchboard"]
CMD ["serve"]
