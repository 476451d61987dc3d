package client_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/google/uuid"

	"github.com/switchboard-gw/switchboard/client"
	"github.com/switchboard-gw/switchboard/webhook/signature"
)

func ExampleNew() {
	c, err := client.New("http://127.0.0.1:8080", client.WithKey("sb_..."))
	if err != nil {
		log.Fatal(err)
	}
	_ = c
}

func ExampleClient_Submit() {
	c, _ := client.New("http://127.0.0.1:8080", client.WithKey("sb_..."))
	rec, err := c.Submit(context.Background(), "workflow.create",
		map[string]string{"Workflow": "46371a70b2cf3953b12b3e0bf8a83ea2"},
		&client.SubmitOptions{Timeout: 30 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(rec.ID, rec.Status) // e.g. 0190f3c2-... pending
}

func ExampleClient_Wait() {
	c, _ := client.New("http://127.0.0.1:8080", client.WithKey("sb_..."))
	ctx := context.Background()
	rec, err := c.Submit(ctx, "workflow.create", map[string]string{"Workflow": "4637"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	final, err := c.Wait(ctx, rec.ID, 2*time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(final.Status, string(final.Reply.Body))
}

func ExampleClient_Do() {
	c, _ := client.New("http://127.0.0.1:8080", client.WithKey("sb_..."))
	rec, err := c.Do(context.Background(), "workflow.create",
		map[string]string{"Workflow": "4637"}, &client.SubmitOptions{Wait: 30 * time.Second})
	switch {
	case client.IsUnroutable(err):
		log.Fatal("no service serves workflow.create")
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println(rec.Status, string(rec.Reply.Body))
}

func ExampleClient_Events() {
	c, _ := client.New("http://127.0.0.1:8080", client.WithKey("sb_..."))
	ctx := context.Background()
	rec, err := c.Submit(ctx, "report.build", map[string]int{"year": 2026}, nil)
	if err != nil {
		log.Fatal(err)
	}
	for ev, err := range c.Events(ctx, rec.ID) {
		if err != nil {
			log.Fatal(err)
		}
		if ev.Final() {
			final, _ := ev.Record()
			fmt.Println("ended", final.Status)
			break
		}
		fmt.Println(ev.Type, string(ev.Data))
	}
}

func ExampleVerifyWebhook() {
	// The gateway's signing secret, as in SWITCHBOARD_WEBHOOK_SECRETS.
	secrets, err := client.ParseWebhookSecrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		log.Fatal(err)
	}
	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := client.VerifyWebhook(r, secrets...)
		if err != nil {
			http.Error(w, "not signed by the gateway", http.StatusUnauthorized)
			return
		}
		fmt.Println(p.Type, p.Data.ID, p.Data.Status)
		w.WriteHeader(http.StatusNoContent)
	})

	// What the gateway sends, signed as it signs it.
	body := []byte(`{"type":"request.replied","timestamp":"2026-12-02T06:00:01Z","data":{"id":"0190f3c2-5d1e-7c4a-9b2e-3f4a5b6c7d8e","routing_key":"workflow.create","status":"replied","time":1552959300136,"expires_at":1552959360136,"reply_to":"https://client.example.com/hooks","request":{},"reply":{"message_id":"","correlation_id":"0190f3c2-5d1e-7c4a-9b2e-3f4a5b6c7d8e","time":1552959300210,"body":{"ok":true}}}}`)
	r := httptest.NewRequest(http.MethodPost, "/hooks", bytes.NewReader(body))
	for k, v := range signature.Headers("0190f3c2-5d1e-7c4a-9b2e-3f4a5b6c7d8e", time.Now(), body, secrets...) {
		r.Header[k] = v
	}
	w := httptest.NewRecorder()
	receiver.ServeHTTP(w, r)
	fmt.Println(w.Code)
	// Output:
	// request.replied 0190f3c2-5d1e-7c4a-9b2e-3f4a5b6c7d8e replied
	// 204
}

// Scatter-gather: one request, a reply from each of three services.
func ExampleSubmitOptions_expectReplies() {
	c, _ := client.New("http://127.0.0.1:8080", client.WithKey("sb_..."))
	rec, err := c.Do(context.Background(), "pricing.quote", map[string]string{"sku": "bolt-m6"},
		&client.SubmitOptions{ExpectReplies: 3, Timeout: 10 * time.Second, Wait: 10 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	// replied with all three, or partial at the deadline with fewer
	fmt.Println(rec.Status, len(rec.Replies))
	for _, r := range rec.Replies {
		fmt.Println(r.From, string(r.Body))
	}
}

// A large body travels by claim check: the record holds the claim, and the
// content is read from the gateway.
func ExampleClient_OpenBlob() {
	c, _ := client.New("http://127.0.0.1:8080", client.WithKey("sb_..."))
	ctx := context.Background()
	rec, err := c.Get(ctx, uuid.MustParse("0190f3c2-5d1e-7c4a-9b2e-3f4a5b6c7d8e"))
	if err != nil {
		log.Fatal(err)
	}
	cl, ok := client.ClaimOf(rec.Request)
	if !ok {
		fmt.Println("inline:", string(rec.Request))
		return
	}
	content, err := c.OpenBlob(ctx, cl) // checks size and SHA-256 as it is read
	if err != nil {
		log.Fatal(err)
	}
	defer content.Close()
	fmt.Println(cl.Size, cl.ContentType)
}

// Is anybody working on it? picked_up_at, or stalled in a queue nobody reads.
func ExampleRecord_pickedUp() {
	c, _ := client.New("http://127.0.0.1:8080", client.WithKey("sb_..."))
	rec, err := c.Get(context.Background(), uuid.MustParse("0190f3c2-5d1e-7c4a-9b2e-3f4a5b6c7d8e"))
	if err != nil {
		log.Fatal(err)
	}
	switch {
	case rec.PickedUpAt != nil:
		fmt.Println("picked up at", time.UnixMilli(*rec.PickedUpAt))
	case rec.Stalled:
		fmt.Println("stalled: no responder has started on it")
	default:
		fmt.Println("waiting for a responder")
	}
}
