package main

import (
	"bytes"
	"encoding/csv"
	"flag"
	"image/color"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var samplePoints = []SweepResult{
	{Clients: 1, Side: "gateway", Requests: 100, RPS: 95.5, P50MS: 9.8, P90MS: 11, P99MS: 15.25, MaxMS: 20},
	{Clients: 1, Side: "baseline", Requests: 100, RPS: 310, P50MS: 3.1, P90MS: 3.5, P99MS: 5, MaxMS: 7},
	{Clients: 16, Side: "gateway", Requests: 100, Errors: 1, RPS: 640, P50MS: 24, P90MS: 30, P99MS: 48, MaxMS: 60, OtherCPUSeconds: 0.25},
	{Clients: 16, Side: "baseline", Requests: 100, RPS: 1400, P50MS: 11, P90MS: 14, P99MS: 21, MaxMS: 25},
	{Clients: 128, Side: "gateway", Requests: 100, RPS: 1100, P50MS: 110, P90MS: 150, P99MS: 260, MaxMS: 300},
	{Clients: 128, Side: "baseline", Requests: 100, RPS: 2500, P50MS: 50, P90MS: 70, P99MS: 90, MaxMS: 120},
}

func TestWriteSweepCSV(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	require.NoError(t, writeSweepCSV(&buf, samplePoints[:3]))
	require.Equal(t, `clients,side,rps,p50_ms,p99_ms,p90_ms,max_ms,requests,errors,other_cpu_s
1,gateway,95.50,9.80,15.25,11.00,20.00,100,0,0.00
1,baseline,310.00,3.10,5.00,3.50,7.00,100,0,0.00
16,gateway,640.00,24.00,48.00,30.00,60.00,100,1,0.25
`, buf.String())
	rows, err := csv.NewReader(&buf).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 4)

	buf.Reset()
	require.NoError(t, writeSweepCSV(&buf, nil))
	require.Equal(t, "clients,side,rps,p50_ms,p99_ms,p90_ms,max_ms,requests,errors,other_cpu_s\n", buf.String())
}

func TestClientListFlag(t *testing.T) {
	t.Parallel()
	l, err := parseClientList(" 1, 4,16 ,64,128,")
	require.NoError(t, err)
	require.Equal(t, []int{1, 4, 16, 64, 128}, l)
	for _, bad := range []string{"", ",", "1,x", "0", "-3"} {
		_, err := parseClientList(bad)
		require.Error(t, err, bad)
	}
	var got []int
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(clientList{&got}, "sweep-clients", "")
	require.NoError(t, fs.Parse([]string{"-sweep-clients", "2,8"}))
	require.Equal(t, []int{2, 8}, got)
	require.Equal(t, "2,8", clientList{&got}.String())
	require.Error(t, fs.Parse([]string{"-sweep-clients", "2,b"}))
}

func TestPlotSweep(t *testing.T) {
	t.Parallel()
	img := plotSweep(samplePoints, "switchboard long-poll round trip vs baseline", "100 requests per point")
	path := filepath.Join(t.TempDir(), "chart.png")
	require.NoError(t, writePNG(path, img))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	dec, err := png.Decode(f)
	require.NoError(t, err)
	require.Equal(t, chartWidth, dec.Bounds().Dx())
	require.Equal(t, chartHeight, dec.Bounds().Dy())

	// Both sides' lines are drawn, and the picture is mostly background.
	count := map[color.RGBA]int{}
	b := dec.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := dec.At(x, y).RGBA()
			count[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8), uint8(a >> 8)}]++
		}
	}
	total := b.Dx() * b.Dy()
	require.Greater(t, count[colGateway], 500)
	require.Greater(t, count[colBaseline], 500)
	require.Greater(t, count[colInk], 2000, "axes and labels")
	require.Greater(t, count[colWhite], total/2)

	// Degenerate input still gives a picture of the same size.
	for _, pts := range [][]SweepResult{nil, {{Clients: 4, Side: "gateway"}}} {
		img := plotSweep(pts, "t", "n")
		require.Equal(t, chartWidth, img.Bounds().Dx())
		require.Equal(t, chartHeight, img.Bounds().Dy())
	}
}

func TestPlotAxes(t *testing.T) {
	t.Parallel()
	a := logAxis(3.1, 260)
	require.Equal(t, 1.0, a.lo)
	require.Equal(t, 1000.0, a.hi)
	require.Equal(t, []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}, a.ticks)
	a.p0, a.p1 = 0, 300
	require.InDelta(t, 100, a.px(10), 1e-9)
	require.InDelta(t, 0, a.px(0), 1e-9, "clamped to the axis")

	l := linearAxis(2500)
	require.Equal(t, 0.0, l.lo)
	require.Equal(t, 3000.0, l.hi)
	require.Equal(t, []float64{0, 500, 1000, 1500, 2000, 2500, 3000}, l.ticks)

	require.Equal(t, 0.5, niceStep(0.31))
	require.Equal(t, 200.0, niceStep(101))
	require.Equal(t, "2.5", formatTick(2.5))
	require.Equal(t, "5000", formatTick(5000))
	require.Equal(t, "20K", formatTick(20000))
	require.Equal(t, 58, textWidth("abcde", 2), "5 glyphs of 5 pixels, 4 gaps of 1, doubled")
	require.Zero(t, textWidth("", 2))
	for r := range glyphs {
		require.Equal(t, string(r), strings.ToUpper(string(r)), "glyphs are capitals")
	}
}

// TestRunSweep runs a tiny sweep against the real services and checks the
// files it writes.
func TestRunSweep(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	o := testOptions(t, 2*time.Minute)
	o.Mode, o.SweepClients, o.SweepRequests, o.SweepWarmup = "sweep", []int{1, 3}, 20, 5
	o.Responders, o.DBMaxConns = 1, 4
	o.SweepCSV, o.SweepPNG = filepath.Join(dir, "sweep.csv"), filepath.Join(dir, "sweep.png")
	rep, _ := runOK(t, o)
	require.Len(t, rep.Sweep, 4)
	for i, want := range []struct {
		clients int
		side    string
	}{{1, "gateway"}, {1, "baseline"}, {3, "gateway"}, {3, "baseline"}} {
		p := rep.Sweep[i]
		require.Equal(t, want.clients, p.Clients)
		require.Equal(t, want.side, p.Side)
		require.Equal(t, 20, p.Requests)
		require.Zero(t, p.Errors)
		require.Positive(t, p.RPS)
		require.LessOrEqual(t, p.P50MS, p.P99MS)
	}
	raw, err := os.ReadFile(o.SweepCSV)
	require.NoError(t, err)
	rows, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 5)
	f, err := os.Open(o.SweepPNG)
	require.NoError(t, err)
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	require.NoError(t, err)
	require.Equal(t, chartWidth, cfg.Width)
	require.Equal(t, chartHeight, cfg.Height)
}
