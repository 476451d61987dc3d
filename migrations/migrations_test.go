package migrations_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/internal/testsvc"
	"github.com/switchboard-gw/switchboard/migrations"
)

func TestAllIsOrderedAndNumbered(t *testing.T) {
	t.Parallel()
	all, err := migrations.All()
	require.NoError(t, err)
	require.NotEmpty(t, all)
	want := 1
	for _, m := range all {
		require.Equal(t, want, m.Version, "versions are 1, 2, 3 ... without gaps")
		require.NotEmpty(t, m.Name)
		require.NotEmpty(t, m.SQL)
		want++
	}
}

// testsvc.Database has already migrated the database; running Up again,
// from several connections at once, applies nothing and fails nothing.
func TestUpIsIdempotentAndSafeConcurrently(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Database(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(context.Background(), dbURL)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(context.Background())
			applied, err := migrations.Up(context.Background(), conn)
			if err == nil && len(applied) > 0 {
				t.Errorf("applied %v on an up-to-date database", applied)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	conn, err := pgx.Connect(context.Background(), dbURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	all, _ := migrations.All()
	var n int
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT count(*) FROM switchboard_migrations`).Scan(&n))
	require.Equal(t, len(all), n)
}
