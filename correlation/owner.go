package correlation

import (
	"context"
	"errors"
	"sync"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Owner is what the API checks before it lets a caller see a request: the
// project it belongs to and its routing key (read scopes are patterns over
// routing keys). Neither ever changes, so they are cached without
// invalidation: a request purged since is found missing by the read that
// follows the check.
type Owner struct {
	ProjectID  uuid.UUID
	RoutingKey string
}

// maxOwners bounds the owners remembered (about 100 bytes each).
const maxOwners = 200_000

// owners remembers the owners of requests this process created or looked
// up, oldest forgotten first, so that the hot path (submit, then long-poll
// on the same instance) checks ownership without a read.
type owners struct {
	mu    sync.Mutex
	m     map[uuid.UUID]Owner
	order []uuid.UUID
	next  int
}

func (o *owners) get(id uuid.UUID) (Owner, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	w, ok := o.m[id]
	return w, ok
}

func (o *owners) put(id uuid.UUID, w Owner) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = make(map[uuid.UUID]Owner)
	}
	if _, ok := o.m[id]; ok {
		return
	}
	if len(o.order) < maxOwners {
		o.order = append(o.order, id)
	} else {
		delete(o.m, o.order[o.next])
		o.order[o.next] = id
		o.next = (o.next + 1) % maxOwners
	}
	o.m[id] = w
}

// Owner returns who owns request id, or ErrNotFound.
func (s *Store) Owner(ctx context.Context, id uuid.UUID) (Owner, error) {
	if w, ok := s.owners.get(id); ok {
		return w, nil
	}
	var w Owner
	err := s.pool.QueryRow(ctx, `SELECT project_id, routing_key FROM requests WHERE id = $1`, [16]byte(id)).
		Scan(&w.ProjectID, &w.RoutingKey)
	if errors.Is(err, pgx.ErrNoRows) {
		return Owner{}, ErrNotFound
	}
	if err != nil {
		return Owner{}, dbErr("read request owner", err)
	}
	s.owners.put(id, w)
	return w, nil
}
