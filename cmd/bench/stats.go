package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// latencySummary is the distribution of one phase's latencies.
type latencySummary struct {
	P50, P90, P99, Max time.Duration
}

func summarize(lats []time.Duration) latencySummary {
	if len(lats) == 0 {
		return latencySummary{}
	}
	s := slices.Clone(lats)
	slices.Sort(s)
	return latencySummary{P50: percentile(s, 0.50), P90: percentile(s, 0.90), P99: percentile(s, 0.99), Max: s[len(s)-1]}
}

// percentile of sorted, nearest-rank.
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// userHZ is the unit of the CPU times in /proc/<pid>/stat: the kernel
// reports them in USER_HZ, which is 100 on every Linux ABI.
const userHZ = 100

// procCPU returns the user+system CPU time pid has used so far.
func procCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	_, cpu, err := parseStat(raw)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return cpu, nil
}

// parseStat reads the command name and the user+system CPU time of a
// /proc/<pid>/stat.
func parseStat(raw []byte) (comm string, cpu time.Duration, err error) {
	comm, f, err := statFields(raw)
	if err != nil {
		return "", 0, err
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	cpu, ok := statTicks(f, 11, 12)
	if !ok {
		return "", 0, errors.New("bad or missing cpu times")
	}
	return comm, cpu, nil
}

// childrenCPU reads the CPU time of the reaped children of a
// /proc/<pid>/stat (cutime and cstime, fields 16 and 17); 0 if unreadable.
func childrenCPU(raw []byte) time.Duration {
	_, f, err := statFields(raw)
	if err != nil {
		return 0
	}
	cpu, _ := statTicks(f, 13, 14)
	return cpu
}

// statFields splits a /proc/<pid>/stat into the command name (field 2) and
// the fields after it, from field 3 on. The name is in parentheses and may
// hold spaces: fields are counted from the last ')'.
func statFields(raw []byte) (comm string, f []string, err error) {
	i, j := bytes.IndexByte(raw, '('), bytes.LastIndexByte(raw, ')')
	if i < 0 || j < i {
		return "", nil, errors.New("unexpected format")
	}
	return string(raw[i+1 : j]), strings.Fields(string(raw[j+1:])), nil
}

// statTicks adds two clock-tick fields of f (indexes a and b) as a duration.
func statTicks(f []string, a, b int) (time.Duration, bool) {
	if len(f) <= max(a, b) {
		return 0, false
	}
	x, err1 := strconv.ParseUint(f[a], 10, 64)
	y, err2 := strconv.ParseUint(f[b], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(x+y) * time.Second / userHZ, true
}

// commCPU sums the CPU time used so far by the processes named (their
// comm) each of comms: e.g. every Postgres backend. A process's reaped
// children count too (cutime and cstime), so a backend that exits in a
// phase (a pool closing) does not take its CPU out of the sum: Postgres's
// postmaster reaps its backends.
func commCPU(comms ...string) map[string]time.Duration {
	out := make(map[string]time.Duration, len(comms))
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		raw, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // it exited
		}
		comm, cpu, err := parseStat(raw)
		if err == nil && slices.Contains(comms, comm) {
			out[comm] += cpu + childrenCPU(raw)
		}
	}
	return out
}

// procPeakRSS returns pid's peak resident set (VmHWM) in bytes.
func procPeakRSS(pid int) (int64, error) { return procStatusBytes(pid, "VmHWM") }

// resetPeakRSS starts pid's VmHWM afresh from its current RSS (Linux 4.0+),
// so each mode reports its own peak rather than the process's lifetime one.
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// hostCPU returns the busy and total jiffies of all CPUs since boot.
func hostCPU() (busy, total uint64) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := bytes.Cut(raw, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i == 8 || i == 9 { // guest time is already counted in user
			continue
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// hostTaskCPU returns the user, nice and system time of all CPUs since
// boot: the time processes ran, interrupts left out.
func hostTaskCPU() time.Duration {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(raw, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 4 || f[0] != "cpu" {
		return 0
	}
	var n uint64
	for _, v := range f[1:4] {
		x, _ := strconv.ParseUint(v, 10, 64)
		n += x
	}
	return time.Duration(n) * time.Second / userHZ
}

// services are the process names of the services both sides use.
var services = []string{"postgres", "beam.smp"}

// meter measures one phase: the CPU a process used in it, the bench's own
// CPU, how busy the host was, and how much CPU went to anything else.
type meter struct {
	pid           int
	cpu0, self0   time.Duration
	busy0, total0 uint64
	task0         time.Duration
	services0     map[string]time.Duration
	// Results, set by stop.
	cpu, self time.Duration
	hostBusy  float64
	// postgres and rabbit are the CPU all Postgres and RabbitMQ processes
	// used in the phase: the services' cost of what was measured.
	postgres, rabbit time.Duration
	// other is the CPU time processes ran on the host in the phase beyond
	// the measured one, the bench, Postgres and RabbitMQ: other work on the
	// machine, which skews what is measured.
	other   time.Duration
	cpuErr  error
	stopped bool
}

func startMeter(pid int) *meter {
	m := &meter{pid: pid}
	m.services0 = commCPU(services...)
	m.cpu0, m.cpuErr = procCPU(pid)
	m.self0, _ = procCPU(os.Getpid())
	m.busy0, m.total0 = hostCPU()
	m.task0 = hostTaskCPU()
	return m
}

func (m *meter) stop() {
	if m.stopped {
		return
	}
	m.stopped = true
	if cpu, err := procCPU(m.pid); err == nil && m.cpuErr == nil {
		m.cpu = cpu - m.cpu0
	} else if m.cpuErr == nil {
		m.cpuErr = err
	}
	if self, err := procCPU(os.Getpid()); err == nil {
		m.self = self - m.self0
	}
	busy, total := hostCPU()
	if total > m.total0 {
		m.hostBusy = float64(busy-m.busy0) / float64(total-m.total0)
	}
	known := m.cpu + m.self
	for name, d := range commCPU(services...) {
		used := d - m.services0[name]
		known += used
		switch name {
		case "postgres":
			m.postgres = used
		case "beam.smp":
			m.rabbit = used
		}
	}
	m.other = max(hostTaskCPU()-m.task0-known, 0)
}
