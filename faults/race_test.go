//go:build faults && race

package faults

// raceEnabled: the switchboard processes are built with -race too.
const raceEnabled = true
