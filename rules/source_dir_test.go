package rules

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func nextEvent(t *testing.T, ch <-chan Event, within time.Duration) Event {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(within):
		t.Fatal("no event")
		return Event{}
	}
}

func noEvent(t *testing.T, ch <-chan Event, within time.Duration) {
	t.Helper()
	select {
	case ev := <-ch:
		t.Fatalf("unexpected event %s %s", ev.Type, ev.Data)
	case <-time.After(within):
	}
}

func TestDirectorySource(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "old.fits"), []byte("present at start"), 0o644))
	src := NewDirectorySource("incoming", DirectorySource{Path: dir, Pattern: "*.fits"}, 150*time.Millisecond, testLogger(t))
	got := make(chan Event, 20)
	runSource(t, src, func(_ context.Context, ev Event) error { got <- ev; return nil })
	waitReady(t, src.Ready())

	// Not reported: a file present at start (touched), a name the pattern
	// excludes, a subdirectory and a file inside it.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "old.fits"), []byte("present at start, modified"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub.fits"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sub.fits", "inner.fits"), []byte("x"), 0o644))
	noEvent(t, got, 400*time.Millisecond)

	// A file written in pieces: created at once, finished only after it
	// stopped changing for the settle period.
	path := filepath.Join(dir, "obs-1.fits")
	f, err := os.Create(path)
	require.NoError(t, err)
	created := nextEvent(t, got, 5*time.Second)
	require.Equal(t, FileCreated, created.Type)
	require.Equal(t, "obs-1.fits", created.Subject)
	require.Equal(t, "file://"+dir, created.Source)
	start := time.Now()
	for range 4 {
		_, err := f.WriteString("0123456789")
		require.NoError(t, err)
		time.Sleep(60 * time.Millisecond)
	}
	require.NoError(t, f.Close())
	finished := nextEvent(t, got, 5*time.Second)
	require.Equal(t, FileFinished, finished.Type)
	require.GreaterOrEqual(t, time.Since(start), 240*time.Millisecond+150*time.Millisecond-50*time.Millisecond,
		"finished only after the writes stopped and the file settled")
	var data struct {
		Path string `json:"path"`
		Name string `json:"name"`
		Size int64  `json:"size"`
	}
	require.NoError(t, json.Unmarshal(finished.Data, &data))
	require.Equal(t, path, data.Path)
	require.Equal(t, "obs-1.fits", data.Name)
	require.EqualValues(t, 40, data.Size)
	require.NotEqual(t, created.ID, finished.ID)
	require.Len(t, finished.ID, 64)

	// The same file as seen again has the same id.
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, finished.ID, fileEvent(FileFinished, finished.Source, path, fi).ID)

	// Written under an excluded name and renamed into the pattern: reported.
	tmp := filepath.Join(dir, "obs-2.partial")
	require.NoError(t, os.WriteFile(tmp, []byte("abc"), 0o644))
	require.NoError(t, os.Rename(tmp, filepath.Join(dir, "obs-2.fits")))
	require.Equal(t, FileCreated, nextEvent(t, got, 5*time.Second).Type)
	ev := nextEvent(t, got, 5*time.Second)
	require.Equal(t, FileFinished, ev.Type)
	require.Equal(t, "obs-2.fits", ev.Subject)

	// Removed before it settled: created, never finished.
	gone := filepath.Join(dir, "obs-3.fits")
	require.NoError(t, os.WriteFile(gone, []byte("abc"), 0o644))
	require.Equal(t, FileCreated, nextEvent(t, got, 5*time.Second).Type)
	require.NoError(t, os.Remove(gone))
	noEvent(t, got, 400*time.Millisecond)
}

func TestDirectorySourceMissingDirectory(t *testing.T) {
	t.Parallel()
	src := NewDirectorySource("x", DirectorySource{Path: filepath.Join(t.TempDir(), "missing")}, 0, testLogger(t))
	err := src.Run(context.Background(), func(context.Context, Event) error { return nil })
	require.ErrorContains(t, err, "missing")

	src = NewDirectorySource("x", DirectorySource{Path: t.TempDir(), Pattern: "[x"}, 0, testLogger(t))
	require.Error(t, src.Run(context.Background(), func(context.Context, Event) error { return nil }))
}
