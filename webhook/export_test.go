package webhook

import (
	"context"
	"time"
)

// ClaimForTest leases due deliveries as a dispatcher would, for tests that
// play an instance dying mid-attempt.
func (s *Store) ClaimForTest(ctx context.Context, limit int, leaseFor time.Duration) ([]Delivery, error) {
	d, _, err := s.claim(ctx, limit, leaseFor)
	return d, err
}
