//go:build faults && !race

package faults

// raceEnabled: the switchboard processes are built without -race.
const raceEnabled = false
