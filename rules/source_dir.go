package rules

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultSettle is how long a new file's size and modification time must
// stay unchanged before it is reported finished.
const DefaultSettle = time.Second

// Event types of a directory source.
const (
	FileCreated  = "file.created"
	FileFinished = "file.finished"
)

// DirWatcher is a directory source: a new regular file in the directory
// whose name matches the pattern yields a file.created event at once, and a
// file.finished event once its size and modification time have not changed
// for the settle period (fsnotify does not expose inotify's close-write
// portably, so settling is the one signal that works everywhere; a writer
// that pauses longer than the settle period mid-file makes it report early —
// have writers create under a name the pattern excludes and rename when
// done, which is reported as soon as it settles). The data of both is
// {"path", "name", "size"}, the subject the file's name, the source
// file://<directory>.
//
// Limits, by design: files present when the source starts are not reported,
// nor are modifications of them; a file still settling when the source stops
// (shutdown, or a reload that changes this source) is never reported
// finished; subdirectories and their contents are ignored. Event ids are
// derived from the path, size and modification time, so the same file seen
// twice (e.g. by two instances watching a shared directory) has the same id
// and downstream consumers that deduplicate by id see it once. A directory
// event has no redelivery: while the engine cannot decide (Postgres away)
// the event is retried in memory until it can or the source stops.
type DirWatcher struct {
	name   string
	cfg    DirectorySource
	settle time.Duration
	logger *slog.Logger

	readyOnce sync.Once
	ready     chan struct{}
}

// NewDirectorySource returns the directory source name; settle <= 0 means
// DefaultSettle. Nothing is watched until Run.
func NewDirectorySource(name string, cfg DirectorySource, settle time.Duration, logger *slog.Logger) *DirWatcher {
	if settle <= 0 {
		settle = DefaultSettle
	}
	if cfg.Pattern == "" {
		cfg.Pattern = "*"
	}
	return &DirWatcher{name: name, cfg: cfg, settle: settle, logger: logger.With("rule_source", name), ready: make(chan struct{})}
}

// Name is the source's name in the rule files.
func (s *DirWatcher) Name() string { return s.name }

// Ready is closed once the directory is watched.
func (s *DirWatcher) Ready() <-chan struct{} { return s.ready }

// pendingFile is a file seen created and not yet reported finished.
type pendingFile struct {
	size    int64
	modTime time.Time
	since   time.Time // when size or modTime last changed
}

// Run watches the directory until ctx ends. It fails when the directory
// cannot be watched (the runner tries again later).
func (s *DirWatcher) Run(ctx context.Context, h Handler) error {
	if _, err := filepath.Match(s.cfg.Pattern, ""); err != nil {
		return fmt.Errorf("pattern %q: %w", s.cfg.Pattern, err)
	}
	dir, err := filepath.Abs(s.cfg.Path)
	if err != nil {
		return fmt.Errorf("directory %q: %w", s.cfg.Path, err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	s.readyOnce.Do(func() { close(s.ready) })
	s.logger.Info("rule source watching", "directory", dir, "pattern", s.cfg.Pattern)

	out := make(chan Event, 256)
	delivered := make(chan struct{})
	go func() { defer close(delivered); s.deliver(ctx, h, out) }()
	defer func() { close(out); <-delivered }()
	emit := func(ev Event) {
		select {
		case out <- ev:
		case <-ctx.Done():
		}
	}

	source := (&url.URL{Scheme: "file", Path: filepath.ToSlash(dir)}).String()
	pending := map[string]*pendingFile{}
	tick := time.NewTicker(max(s.settle/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("watch %s: watcher closed", dir)
			}
			// An overflowed kernel queue loses events; there is nothing to
			// replay them from, so say so and go on.
			s.logger.Error("directory watch error; events may have been missed", "error", err, "directory", dir)
		case e, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("watch %s: watcher closed", dir)
			}
			name := filepath.Base(e.Name)
			if filepath.Dir(e.Name) != dir {
				continue
			}
			if match, _ := filepath.Match(s.cfg.Pattern, name); !match {
				continue
			}
			switch {
			case e.Has(fsnotify.Create):
				fi, err := os.Stat(e.Name)
				if err != nil || !fi.Mode().IsRegular() {
					continue
				}
				pending[e.Name] = &pendingFile{size: fi.Size(), modTime: fi.ModTime(), since: time.Now()}
				emit(fileEvent(FileCreated, source, e.Name, fi))
			case e.Has(fsnotify.Remove) || e.Has(fsnotify.Rename):
				delete(pending, e.Name)
			}
		case now := <-tick.C:
			for path, p := range pending {
				fi, err := os.Stat(path)
				if err != nil || !fi.Mode().IsRegular() {
					delete(pending, path)
					continue
				}
				if fi.Size() != p.size || !fi.ModTime().Equal(p.modTime) {
					p.size, p.modTime, p.since = fi.Size(), fi.ModTime(), now
					continue
				}
				if now.Sub(p.since) >= s.settle {
					delete(pending, path)
					emit(fileEvent(FileFinished, source, path, fi))
				}
			}
		}
	}
}

// deliver hands each event to h, retrying with backoff while the engine
// cannot decide, until ctx ends.
func (s *DirWatcher) deliver(ctx context.Context, h Handler, events <-chan Event) {
	work := context.WithoutCancel(ctx)
	for ev := range events {
		wait := 100 * time.Millisecond
		for ctx.Err() == nil {
			err := h(work, ev)
			if err == nil {
				break
			}
			s.logger.Warn("rule engine could not take the event; retrying", "error", err, "event_id", ev.ID, "backoff", wait)
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
			wait = min(wait*2, 5*time.Second)
		}
		if ctx.Err() != nil {
			s.logger.Warn("rule source stopped; event not delivered", "event_id", ev.ID, "type", ev.Type)
		}
	}
}

func fileEvent(typ, source, path string, fi os.FileInfo) Event {
	sum := sha256.Sum256([]byte(typ + "\x00" + path + "\x00" + strconv.FormatInt(fi.Size(), 10) + "\x00" +
		strconv.FormatInt(fi.ModTime().UnixNano(), 10)))
	data, _ := json.Marshal(struct {
		Path string `json:"path"`
		Name string `json:"name"`
		Size int64  `json:"size"`
	}{path, filepath.Base(path), fi.Size()})
	return Event{
		ID:      hex.EncodeToString(sum[:]),
		Source:  source,
		Type:    typ,
		Time:    fi.ModTime().UTC(),
		Subject: filepath.Base(path),
		Data:    data,
	}
}
