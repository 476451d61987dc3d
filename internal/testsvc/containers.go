package testsvc

import (
	"context"
	"fmt"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Containers started here live as long as the test process; testcontainers'
// reaper removes them afterwards. They are only used when no service is
// configured or running locally and a Docker engine is reachable.

func startPostgresContainer() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:        "postgres:16-alpine",
			ExposedPorts: []string{"5432/tcp"},
			Env:          map[string]string{"POSTGRES_HOST_AUTH_METHOD": "trust"},
			WaitingFor:   wait.ForListeningPort("5432/tcp").WithStartupTimeout(time.Minute),
		},
		Started: true,
	})
	if err != nil {
		return "", fmt.Errorf("start postgres container: %w", err)
	}
	host, err := c.Host(ctx)
	if err != nil {
		return "", err
	}
	port, err := c.MappedPort(ctx, "5432/tcp")
	if err != nil {
		return "", err
	}
	u := fmt.Sprintf("postgres://postgres@%s:%s/postgres?sslmode=disable", host, port.Port())
	// The port opens before the server accepts queries.
	for i := 0; i < 60; i++ {
		if pingPostgres(u) == nil {
			return u, nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return "", fmt.Errorf("postgres container never became ready")
}

func startRabbitContainer() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:        "rabbitmq:3-alpine",
			ExposedPorts: []string{"5672/tcp"},
			WaitingFor:   wait.ForLog("Server startup complete").WithStartupTimeout(time.Minute),
		},
		Started: true,
	})
	if err != nil {
		return "", fmt.Errorf("start rabbitmq container: %w", err)
	}
	host, err := c.Host(ctx)
	if err != nil {
		return "", err
	}
	port, err := c.MappedPort(ctx, "5672/tcp")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("amqp://guest:guest@%s:%s/", host, port.Port()), nil
}
