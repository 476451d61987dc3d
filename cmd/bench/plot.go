package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// The sweep's chart, drawn with the standard library alone: two panels
// over the number of clients (the offered load of a closed loop), latency
// (p50 and p99, log scale) on the left and throughput on the right, the
// gateway's long-poll round trip against the baseline's.

// Chart size in pixels.
const (
	chartWidth  = 1200
	chartHeight = 560
)

var (
	colWhite    = color.RGBA{255, 255, 255, 255}
	colInk      = color.RGBA{40, 40, 40, 255}
	colGrid     = color.RGBA{225, 225, 225, 255}
	colGateway  = color.RGBA{31, 119, 180, 255} // blue
	colBaseline = color.RGBA{230, 120, 20, 255} // orange
)

// canvas is an image with the few drawing operations the chart needs.
type canvas struct{ *image.RGBA }

func newCanvas(w, h int) canvas {
	c := canvas{image.NewRGBA(image.Rect(0, 0, w, h))}
	c.fill(c.Rect, colWhite)
	return c
}

func (c canvas) fill(r image.Rectangle, col color.RGBA) {
	r = r.Intersect(c.Rect)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c.SetRGBA(x, y, col)
		}
	}
}

// dot draws a square of side size centred on (x, y).
func (c canvas) dot(x, y float64, size int, col color.RGBA) {
	x0, y0 := int(math.Round(x-float64(size)/2)), int(math.Round(y-float64(size)/2))
	c.fill(image.Rect(x0, y0, x0+size, y0+size), col)
}

// disc draws a filled circle.
func (c canvas) disc(x, y, r float64, col color.RGBA) {
	for dy := -r; dy <= r; dy++ {
		for dx := -r; dx <= r; dx++ {
			if dx*dx+dy*dy <= r*r+0.5 {
				c.SetRGBA(int(math.Round(x+dx)), int(math.Round(y+dy)), col)
			}
		}
	}
}

// line draws a line width pixels wide; dash > 0 draws dashes of that many
// pixels with gaps as long.
func (c canvas) line(x0, y0, x1, y1 float64, width int, dash float64, col color.RGBA) {
	dx, dy := x1-x0, y1-y0
	length := math.Hypot(dx, dy)
	steps := max(int(length*2), 1)
	for i := 0; i <= steps; i++ {
		t := float64(i) / float64(steps)
		if dash > 0 && int(t*length/dash)%2 == 1 {
			continue
		}
		c.dot(x0+t*dx, y0+t*dy, width, col)
	}
}

// textWidth is the width of s drawn at scale.
func textWidth(s string, scale int) int {
	n := len([]rune(s))
	if n == 0 {
		return 0
	}
	return (6*n - 1) * scale
}

// text draws s with its top left corner at (x, y); vertical text reads
// upwards from (x, y), its bottom left corner.
func (c canvas) text(x, y int, s string, scale int, vertical bool, col color.RGBA) {
	for i, r := range []rune(strings.ToUpper(s)) {
		g, ok := glyphs[r]
		if !ok {
			if unicode.IsSpace(r) {
				continue
			}
			g = glyphs['?']
		}
		for gy, row := range g {
			for gx := range 5 {
				if row&(0x10>>gx) == 0 {
					continue
				}
				px, py := x+(6*i+gx)*scale, y+gy*scale
				if vertical {
					px, py = x+gy*scale, y-(6*i+gx+1)*scale
				}
				c.fill(image.Rect(px, py, px+scale, py+scale), col)
			}
		}
	}
}

// axis maps values to pixels, linearly or on a log scale.
type axis struct {
	lo, hi   float64 // values at the ends
	p0, p1   float64 // their pixels
	log      bool
	ticks    []float64
	tickText func(float64) string
}

func (a axis) px(v float64) float64 {
	f := func(x float64) float64 { return x }
	if a.log {
		f = math.Log10
		v = max(v, a.lo)
	}
	return a.p0 + (f(v)-f(a.lo))/(f(a.hi)-f(a.lo))*(a.p1-a.p0)
}

// logAxis spans lo..hi padded to whole decades (or to 1-2-5 steps), with
// ticks at 1, 2 and 5 of each decade.
func logAxis(lo, hi float64) axis {
	lo, hi = max(lo, 1e-3), max(hi, 1e-3)
	a := axis{log: true, lo: math.Pow(10, math.Floor(math.Log10(lo))), hi: math.Pow(10, math.Ceil(math.Log10(hi)))}
	if a.hi <= a.lo {
		a.hi = a.lo * 10
	}
	for d := a.lo; d <= a.hi*1.0001; d *= 10 {
		for _, m := range []float64{1, 2, 5} {
			if v := d * m; v <= a.hi*1.0001 {
				a.ticks = append(a.ticks, v)
			}
		}
	}
	a.tickText = formatTick
	return a
}

// linearAxis spans 0..a round number above hi, with ticks at 1-2-5 steps.
func linearAxis(hi float64) axis {
	if hi <= 0 {
		hi = 1
	}
	step := niceStep(hi / 5)
	a := axis{lo: 0, hi: math.Ceil(hi*1.05/step) * step}
	for v := 0.0; v <= a.hi+step/2; v += step {
		a.ticks = append(a.ticks, v)
	}
	a.tickText = formatTick
	return a
}

// clientAxis is a log2 axis over the client counts, a tick at each.
func clientAxis(clients []int) axis {
	lo, hi := float64(slices.Min(clients)), float64(slices.Max(clients))
	a := axis{log: true, lo: lo / 1.5, hi: hi * 1.5, tickText: formatTick}
	for _, c := range clients {
		a.ticks = append(a.ticks, float64(c))
	}
	return a
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

func formatTick(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "K"
	default:
		return strconv.FormatFloat(math.Round(v*1000)/1000, 'f', -1, 64)
	}
}

// chartSeries is one line of a panel.
type chartSeries struct {
	name   string
	col    color.RGBA
	dashed bool
	x, y   []float64
}

// panel draws axes, grid, labels and series into the rectangle r (the
// plotting area; labels go outside it).
func (c canvas) panel(r image.Rectangle, xa, ya axis, xLabel, yLabel string, series []chartSeries) {
	xa.p0, xa.p1 = float64(r.Min.X), float64(r.Max.X)
	ya.p0, ya.p1 = float64(r.Max.Y), float64(r.Min.Y)
	for _, t := range ya.ticks {
		y := ya.px(t)
		c.line(float64(r.Min.X), y, float64(r.Max.X), y, 1, 0, colGrid)
		s := ya.tickText(t)
		c.text(r.Min.X-8-textWidth(s, 2), int(y)-7, s, 2, false, colInk)
	}
	for _, t := range xa.ticks {
		x := xa.px(t)
		c.line(x, float64(r.Min.Y), x, float64(r.Max.Y), 1, 0, colGrid)
		s := xa.tickText(t)
		c.text(int(x)-textWidth(s, 2)/2, r.Max.Y+8, s, 2, false, colInk)
	}
	c.line(float64(r.Min.X), float64(r.Min.Y), float64(r.Min.X), float64(r.Max.Y), 2, 0, colInk)
	c.line(float64(r.Min.X), float64(r.Max.Y), float64(r.Max.X), float64(r.Max.Y), 2, 0, colInk)
	c.text((r.Min.X+r.Max.X-textWidth(xLabel, 2))/2, r.Max.Y+32, xLabel, 2, false, colInk)
	c.text(r.Min.X-74, (r.Min.Y+r.Max.Y+textWidth(yLabel, 2))/2, yLabel, 2, true, colInk)
	for _, s := range series {
		dash := 0.0
		if s.dashed {
			dash = 9
		}
		for i := range s.x {
			x, y := xa.px(s.x[i]), ya.px(s.y[i])
			if i > 0 {
				c.line(xa.px(s.x[i-1]), ya.px(s.y[i-1]), x, y, 3, dash, s.col)
			}
			if s.dashed {
				c.dot(x, y, 9, s.col)
			} else {
				c.disc(x, y, 5, s.col)
			}
		}
	}
}

// legend draws the series' names in a row starting at (x, y).
func (c canvas) legend(x, y int, series []chartSeries) {
	for _, s := range series {
		dash := 0.0
		if s.dashed {
			dash = 9
		}
		c.line(float64(x), float64(y+7), float64(x+36), float64(y+7), 3, dash, s.col)
		if s.dashed {
			c.dot(float64(x+18), float64(y+7), 9, s.col)
		} else {
			c.disc(float64(x+18), float64(y+7), 5, s.col)
		}
		c.text(x+44, y, s.name, 2, false, colInk)
		x += 44 + textWidth(s.name, 2) + 36
	}
}

// sweepSeries picks one figure of one side, ordered by clients.
func sweepSeries(pts []SweepResult, side string, figure func(SweepResult) float64) (xs, ys []float64) {
	pts = slices.Clone(pts)
	slices.SortStableFunc(pts, func(a, b SweepResult) int { return a.Clients - b.Clients })
	for _, p := range pts {
		if p.Side == side {
			xs, ys = append(xs, float64(p.Clients)), append(ys, figure(p))
		}
	}
	return xs, ys
}

// plotSweep draws the sweep's chart; title and note go above it.
func plotSweep(pts []SweepResult, title, note string) *image.RGBA {
	c := newCanvas(chartWidth, chartHeight)
	var clients []int
	for _, p := range pts {
		if !slices.Contains(clients, p.Clients) {
			clients = append(clients, p.Clients)
		}
	}
	if len(clients) == 0 {
		clients = []int{1}
	}
	p50 := func(p SweepResult) float64 { return p.P50MS }
	p99 := func(p SweepResult) float64 { return p.P99MS }
	rps := func(p SweepResult) float64 { return p.RPS }
	mk := func(name, side string, col color.RGBA, dashed bool, f func(SweepResult) float64) chartSeries {
		s := chartSeries{name: name, col: col, dashed: dashed}
		s.x, s.y = sweepSeries(pts, side, f)
		return s
	}
	latency := []chartSeries{
		mk("gateway p50", "gateway", colGateway, false, p50),
		mk("gateway p99", "gateway", colGateway, true, p99),
		mk("baseline p50", "baseline", colBaseline, false, p50),
		mk("baseline p99", "baseline", colBaseline, true, p99),
	}
	throughput := []chartSeries{
		mk("gateway", "gateway", colGateway, false, rps),
		mk("baseline", "baseline", colBaseline, false, rps),
	}
	lo, hi, top := math.Inf(1), 0.0, 0.0
	for _, p := range pts {
		for _, v := range []float64{p.P50MS, p.P99MS} {
			if v > 0 {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
		top = max(top, p.RPS)
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1, 10
	}

	c.text((chartWidth-textWidth(title, 3))/2, 14, title, 3, false, colInk)
	c.text((chartWidth-textWidth(note, 2))/2, 46, note, 2, false, colInk)
	c.legend(110, 74, latency)
	left := image.Rect(110, 110, 570, chartHeight-76)
	right := image.Rect(720, 110, 1180, chartHeight-76)
	c.panel(left, clientAxis(clients), logAxis(lo, hi), "clients (log scale)", "latency ms (log scale)", latency)
	c.panel(right, clientAxis(clients), linearAxis(top), "clients (log scale)", "throughput (requests/s)", throughput)
	return c.RGBA
}

// writePNG writes img to path.
func writePNG(path string, img image.Image) error {
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
