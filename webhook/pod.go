package webhook

import (
	"errors"
	"slices"
)

// pod holds only what the webhook reads of a Pod, decoded from
// request.object while the review is read (see review.go). It keeps the
// meaning the fields had when they were decoded with sigs.k8s.io/json into
// a struct of the same shape: case-sensitive names, the last of duplicate
// names winning (objects merged, as encoding/json merges into a struct or
// map it already filled), null leaving a string as it was.
type pod struct {
	name, generateName string
	// optedOut: metadata.labels holds the opt-out label with its value.
	optedOut           bool
	serviceAccountName string
	// pullSecrets is spec.imagePullSecrets' names; its nil state (absent or
	// null) makes the patch add the whole list instead of appending to it.
	pullSecrets                                     stringList
	containers, initContainers, ephemeralContainers stringList
}

// stringList is a decoded JSON array of one string field per element, with
// the states encoding/json gives a slice: nil (absent or null), empty, or
// holding elements. slots keeps every element ever decoded at an index, as
// the backing array of a slice does: a later array of the same field decodes
// its elements into them (a member absent from the element keeps its value).
type stringList struct {
	slots []string
	n     int
	isSet bool // not nil
}

func (l *stringList) items() []string { return l.slots[:l.n] }

// reset returns l to nil, keeping its memory.
func (l *stringList) reset() {
	clear(l.slots)
	l.slots, l.n, l.isSet = l.slots[:0], 0, false
}

func (p *pod) reset() {
	p.name, p.generateName, p.optedOut, p.serviceAccountName = "", "", false, ""
	for _, l := range []*stringList{&p.pullSecrets, &p.containers, &p.initContainers, &p.ephemeralContainers} {
		l.reset()
	}
}

var errEmptyObject = errors.New("decoding pod: empty object")

// displayName is the pod's name, or its generateName prefix before the API
// server has named it.
func (p *pod) displayName() string {
	if p.name != "" {
		return p.name
	}
	return p.generateName
}

// images calls fn for the image of every container, init and ephemeral
// container.
func (p *pod) images(fn func(image string)) {
	for _, l := range [...]*stringList{&p.containers, &p.initContainers, &p.ephemeralContainers} {
		for _, image := range l.items() {
			fn(image)
		}
	}
}

// secretsToAdd is names without those spec.imagePullSecrets already holds,
// each once, in order.
func (p *pod) secretsToAdd(names []string) []string {
	existing := p.pullSecrets.items()
	add := make([]string, 0, len(names))
	for _, n := range names {
		if !slices.Contains(existing, n) && !slices.Contains(add, n) {
			add = append(add, n)
		}
	}
	return add
}

// appendPatch appends the JSON patch adding add to spec.imagePullSecrets,
// from fixed pieces and the quoted names: the whole list when the pod has
// none (absent or null), else one append per name.
func (p *pod) appendPatch(b []byte, add []string) []byte {
	if !p.pullSecrets.isSet {
		b = append(b, `[{"op":"add","path":"/spec/imagePullSecrets","value":[`...)
		for i, n := range add {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"name":`...)
			b = appendQuoted(b, n)
			b = append(b, '}')
		}
		return append(b, "]}]"...)
	}
	b = append(b, '[')
	for i, n := range add {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"op":"add","path":"/spec/imagePullSecrets/-","value":{"name":`...)
		b = appendQuoted(b, n)
		b = append(b, "}}"...)
	}
	return append(b, ']')
}
