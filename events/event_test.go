package events

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

func TestFromMessage(t *testing.T) {
	t.Parallel()
	id := uuid.New()
	at := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)

	t.Run("a structured CloudEvent is kept as it is", func(t *testing.T) {
		body := []byte(`{"specversion":"1.0","id":"e1","source":"calibrator","type":"progress","correlationid":"` + id.String() + `","data":{"progress":0.5}}`)
		in, ok, err := FromMessage(body, Properties{ContentType: "application/cloudevents+json"})
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, Incoming{RequestID: id, Source: "calibrator", ID: "e1", Type: "progress", Event: body}, in)
	})
	t.Run("the request may be named by subject or the AMQP correlation id", func(t *testing.T) {
		body := []byte(`{"specversion":"1.0","id":"e1","source":"s","type":"t","subject":"` + id.String() + `"}`)
		in, ok, err := FromMessage(body, Properties{})
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, id, in.RequestID)
		body = []byte(`{"specversion":"1.0","id":"e1","source":"s","type":"t"}`)
		in, ok, err = FromMessage(body, Properties{CorrelationID: id.String()})
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, id, in.RequestID)
	})
	t.Run("a plain JSON body becomes the data of an event", func(t *testing.T) {
		body := []byte(`{"state":"running","progress":0.4}`)
		in, ok, err := FromMessage(body, Properties{CorrelationID: id.String(), MessageID: "m1", AppID: "calibrator", Timestamp: at})
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, "progress", in.Type)
		require.Equal(t, "calibrator", in.Source)
		require.Equal(t, "m1", in.ID)
		var ev CloudEvent
		require.NoError(t, json.Unmarshal(in.Event, &ev))
		require.Equal(t, "1.0", ev.SpecVersion)
		require.Equal(t, id.String(), ev.CorrelationID)
		require.Equal(t, at, ev.Time)
		require.JSONEq(t, string(body), string(ev.Data))
	})
	t.Run("no request named", func(t *testing.T) {
		_, ok, err := FromMessage([]byte(`{"x":1}`), Properties{CorrelationID: "not-a-uuid"})
		require.NoError(t, err)
		require.False(t, ok)
	})
	for name, body := range map[string]string{
		"not JSON":        `{"x":`,
		"wrong version":   `{"specversion":"0.3","id":"e","source":"s","type":"t"}`,
		"no id":           `{"specversion":"1.0","source":"s","type":"t"}`,
		"newline in type": `{"specversion":"1.0","id":"e","source":"s","type":"a\nb"}`,
		"malformed time":  `{"specversion":"1.0","id":"e","source":"s","type":"t","time":"yesterday"}`,
	} {
		t.Run("refused: "+name, func(t *testing.T) {
			_, _, err := FromMessage([]byte(body), Properties{CorrelationID: id.String()})
			require.ErrorIs(t, err, ErrInvalid)
		})
	}
}

// Plain data that does not fit the envelope's field types is still data.
func TestFromMessagePlainDataOfAnyShape(t *testing.T) {
	t.Parallel()
	id := uuid.New()
	for _, body := range []string{`[1, 2]`, `"done"`, `{"id": 5, "time": "soon"}`} {
		in, ok, err := FromMessage([]byte(body), Properties{CorrelationID: id.String()})
		require.NoError(t, err, body)
		require.True(t, ok)
		var ev CloudEvent
		require.NoError(t, json.Unmarshal(in.Event, &ev))
		require.JSONEq(t, body, string(ev.Data))
	}
}
