package webhook

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// reviewRequest is what the webhook reads of an AdmissionReview: the
// request fields the review uses and the pod from request.object. It is
// filled in one pass over the body by decodeReview; every other member is
// skipped without being built.
type reviewRequest struct {
	uid                                   string
	group, version, kind                  string // request.kind
	resGroup, resVersion, resource        string // request.resource
	subResource, namespace, operation, nm string
	dryRun                                bool
	pod                                   pod
	// podErr is why request.object is not a pod the webhook can read: the
	// review admits the pod unchanged with a warning.
	podErr error
}

func (r *reviewRequest) reset() {
	p := r.pod
	p.reset()
	*r = reviewRequest{pod: p, podErr: errEmptyObject}
}

// The AdmissionReview version served; the webhook configurations ask for
// it alone (admissionReviewVersions: [v1]).
const (
	reviewAPIVersion = "admission.k8s.io/v1"
	reviewKind       = "AdmissionReview"
)

// badReview is a body that is not an AdmissionReview the webhook serves.
type badReview struct{ msg string }

func (e *badReview) Error() string { return e.msg }

// decodeOptions: strings as encoding/json reads them (invalid UTF-8
// replaced, not refused), and duplicate names allowed (the last wins, as
// with sigs.k8s.io/json).
var decodeOptions = []jsontext.Options{jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)}

// decoder reads one body. It is reused (see reviewState): it keeps only
// memory between reviews, never values.
type decoder struct {
	dec     jsontext.Decoder
	scratch []byte
	optOut  struct{ key, value string }
	// strs, when set, holds the strings seen in earlier reviews.
	strs  *internCache
	inPod bool
	// reqErr and podErr are the first type mismatch (encoding/json's
	// UnmarshalTypeError) in the review or in its object.
	reqErr, podErr error
}

// decodeReview reads body into r. The result is what controller-runtime's
// decoding of an AdmissionReview (its codec, sigs.k8s.io/json, case-
// sensitive) followed by decoding request.object into the pod struct gave,
// for a body that is an admission.k8s.io/v1 AdmissionReview with a request;
// any other body is an error (a *badReview when it is JSON).
//
// body is read from directly (the decoder consumes the Buffer).
func (d *decoder) decodeReview(body *bytes.Buffer, r *reviewRequest) error {
	r.reset()
	d.reqErr, d.podErr, d.inPod = nil, nil, false
	d.dec.Reset(body, decodeOptions...)
	if k := d.dec.PeekKind(); k != '{' {
		if _, err := d.dec.ReadValue(); err != nil {
			return err
		}
		return &badReview{fmt.Sprintf("the body is a JSON %s, not an AdmissionReview", kindName(k))}
	}
	var apiVersion, kind string
	var hasAPIVersion, hasKind, hasRequest bool
	err := d.object(func(name []byte) error {
		// apiVersion and kind are read as controller-runtime's codec finds
		// the version and kind: with encoding/json, whose names match
		// case-insensitively.
		switch {
		case foldEqual(name, "APIVERSION"):
			return d.interpretString(&apiVersion, &hasAPIVersion)
		case foldEqual(name, "KIND"):
			return d.interpretString(&kind, &hasKind)
		}
		switch string(name) {
		case "request":
			switch d.dec.PeekKind() {
			case 'n':
				// A nil request; an object after it starts afresh.
				hasRequest = false
				r.reset()
				return d.skip()
			case '{':
				hasRequest = true
				return d.request(r)
			}
			return d.mismatch("request")
		case "response":
			return d.check(admissionResponseShape)
		}
		return d.skip()
	})
	if err != nil {
		return err
	}
	if _, err := d.dec.ReadToken(); err != io.EOF {
		if err == nil {
			err = errors.New("data after the AdmissionReview")
		}
		return err
	}
	switch {
	case d.reqErr != nil:
		return d.reqErr
	case !hasAPIVersion && !hasKind:
		return &badReview{"the body has no apiVersion nor kind: not an AdmissionReview"}
	case apiVersion != reviewAPIVersion:
		return &badReview{fmt.Sprintf("AdmissionReview apiVersion %q is not served: only %s is (admissionReviewVersions: [v1])", apiVersion, reviewAPIVersion)}
	case kind != reviewKind:
		return &badReview{fmt.Sprintf("kind %q is not %s", kind, reviewKind)}
	case !hasRequest:
		return &badReview{"the AdmissionReview has no request"}
	}
	return nil
}

func kindName(k jsontext.Kind) string {
	switch k {
	case '[':
		return "array"
	case '"':
		return "string"
	case '0':
		return "number"
	case 'n':
		return "null"
	case 't', 'f':
		return "boolean"
	}
	return "value"
}

// request reads request's members into r, merging into what an earlier
// request member gave.
func (d *decoder) request(r *reviewRequest) error {
	return d.object(func(name []byte) error {
		switch string(name) {
		case "uid":
			return d.str(&r.uid)
		case "kind":
			return d.strings3("group", &r.group, "version", &r.version, "kind", &r.kind)
		case "resource":
			return d.strings3("group", &r.resGroup, "version", &r.resVersion, "resource", &r.resource)
		case "subResource":
			return d.str(&r.subResource)
		case "namespace":
			return d.strCached(&r.namespace)
		case "operation":
			return d.str(&r.operation)
		case "name":
			return d.str(&r.nm)
		case "dryRun":
			switch d.dec.PeekKind() {
			case 't', 'f':
				r.dryRun = d.dec.PeekKind() == 't'
				return d.skip()
			case 'n':
				r.dryRun = false
				return d.skip()
			}
			return d.mismatch("dryRun")
		case "object":
			if d.dec.PeekKind() == 'n' {
				return d.skip() // RawExtension keeps what it had
			}
			// The object replaces any earlier one whole.
			r.pod.reset()
			d.podErr, d.inPod = nil, true
			err := d.podObject(&r.pod)
			d.inPod = false
			r.podErr = d.podErr
			if r.podErr != nil {
				r.podErr = fmt.Errorf("decoding pod: %w", r.podErr)
			}
			return err
		case "requestKind":
			return d.check(gvkShape)
		case "requestResource":
			return d.check(gvrShape)
		case "requestSubResource":
			return d.check(stringShape)
		case "userInfo":
			return d.check(userInfoShape)
		}
		return d.skip() // oldObject, options (raw), unknown members
	})
}

// decodePod reads a pod object alone (request.object of an
// admission.Request) into p.
func (d *decoder) decodePod(raw []byte, p *pod) error {
	p.reset()
	if len(raw) == 0 {
		return errEmptyObject
	}
	d.dec.Reset(bytes.NewBuffer(raw), decodeOptions...)
	d.podErr, d.inPod = nil, true
	err := d.podObject(p)
	d.inPod = false
	if err == nil {
		if _, err = d.dec.ReadToken(); err == io.EOF {
			err = d.podErr
		} else if err == nil {
			err = errors.New("data after the object")
		}
	}
	if err != nil {
		return fmt.Errorf("decoding pod: %w", err)
	}
	return nil
}

// podObject reads the pod's members, as decodePod did into a struct with
// the fields used.
func (d *decoder) podObject(p *pod) error {
	if !d.structStart("pod") {
		return d.skip()
	}
	return d.object(func(name []byte) error {
		switch string(name) {
		case "metadata":
			if !d.structStart("metadata") {
				return d.skip()
			}
			return d.object(func(name []byte) error {
				switch string(name) {
				case "name":
					return d.str(&p.name)
				case "generateName":
					return d.strCached(&p.generateName)
				case "labels":
					return d.labels(p)
				}
				return d.skip()
			})
		case "spec":
			if !d.structStart("spec") {
				return d.skip()
			}
			return d.object(func(name []byte) error {
				switch string(name) {
				case "serviceAccountName":
					return d.strCached(&p.serviceAccountName)
				case "imagePullSecrets":
					return d.list(&p.pullSecrets, "name")
				case "containers":
					return d.list(&p.containers, "image")
				case "initContainers":
					return d.list(&p.initContainers, "image")
				case "ephemeralContainers":
					return d.list(&p.ephemeralContainers, "image")
				}
				return d.skip()
			})
		}
		return d.skip()
	})
}

// labels reads metadata.labels for the opt-out label alone; every value
// must still be a string (or null) as in a map[string]string.
func (d *decoder) labels(p *pod) error {
	switch d.dec.PeekKind() {
	case 'n':
		p.optedOut = false // a nil map
		return d.skip()
	case '{':
	default:
		return d.mismatch("labels")
	}
	return d.object(func(name []byte) error {
		isKey := string(name) == d.optOut.key
		switch d.dec.PeekKind() {
		case '"':
			v, err := d.readString()
			if err == nil && isKey {
				p.optedOut = string(v) == d.optOut.value
			}
			return err
		case 'n':
			if isKey {
				p.optedOut = d.optOut.value == "" // the zero value is stored
			}
			return d.skip()
		}
		return d.mismatch("label value")
	})
}

// list reads an array of objects, keeping member field of each, as
// encoding/json decodes into a slice of structs (see stringList).
func (d *decoder) list(l *stringList, field string) error {
	switch d.dec.PeekKind() {
	case 'n':
		l.reset()
		return d.skip()
	case '[':
	default:
		return d.mismatch(field + " list")
	}
	if _, err := d.dec.ReadToken(); err != nil {
		return err
	}
	i := 0
	for d.dec.PeekKind() != ']' {
		if i >= len(l.slots) {
			l.slots = append(l.slots, "")
		}
		switch d.dec.PeekKind() {
		case '{':
			err := d.object(func(name []byte) error {
				if string(name) == field {
					return d.strCached(&l.slots[i])
				}
				return d.skip()
			})
			if err != nil {
				return err
			}
		case 'n':
			if err := d.skip(); err != nil {
				return err
			}
		default:
			if err := d.mismatch(field + " list element"); err != nil {
				return err
			}
		}
		i++
	}
	if _, err := d.dec.ReadToken(); err != nil {
		return err
	}
	if i == 0 { // a new empty slice: the old elements are gone
		clear(l.slots)
		l.slots = l.slots[:0]
	}
	l.n, l.isSet = i, true
	return nil
}

// object reads an object's members, calling fn with each name (valid
// until the next read) to read the member's value.
func (d *decoder) object(fn func(name []byte) error) error {
	if _, err := d.dec.ReadToken(); err != nil {
		return err
	}
	for d.dec.PeekKind() != '}' {
		v, err := d.dec.ReadValue()
		if err != nil {
			return err
		}
		if err := fn(d.unquote(v)); err != nil {
			return err
		}
	}
	_, err := d.dec.ReadToken()
	return err
}

// structStart reports whether the next value is an object to read into a
// struct; null leaves the struct as it is, anything else is a mismatch.
func (d *decoder) structStart(what string) bool {
	switch d.dec.PeekKind() {
	case '{':
		return true
	case 'n', 0:
	default:
		d.fail(what)
	}
	return false
}

// str reads a string into s; null leaves s as it is.
func (d *decoder) str(s *string) error {
	switch d.dec.PeekKind() {
	case '"':
		v, err := d.readString()
		if err == nil {
			*s = intern(v)
		}
		return err
	case 'n':
		return d.skip()
	}
	return d.mismatch("string")
}

// strCached is str for a value that repeats across reviews (a
// namespace, an image): a string seen before is not allocated again.
func (d *decoder) strCached(s *string) error {
	if d.strs == nil || d.dec.PeekKind() != '"' {
		return d.str(s)
	}
	v, err := d.readString()
	if err == nil {
		*s = d.strs.get(v)
	}
	return err
}

// internCache maps strings to themselves, bounded in entries and in the
// length of each: it starts afresh when full, and a longer string (a pod
// can carry one of megabytes, before any validation) is not kept, so what
// tenants send cannot grow it past maxInterned × maxInternedLen bytes.
type internCache struct {
	mu sync.RWMutex
	m  map[string]string
}

const (
	maxInterned    = 4096
	maxInternedLen = 512 // a long image reference with a digest is about 200
)

func (c *internCache) get(b []byte) string {
	if len(b) > maxInternedLen {
		return string(b)
	}
	c.mu.RLock()
	s, ok := c.m[string(b)]
	c.mu.RUnlock()
	if ok {
		return s
	}
	s = string(b)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxInterned {
		c.m = make(map[string]string)
	}
	c.m[s] = s
	c.mu.Unlock()
	return s
}

// strings3 reads an object of up to three string members (a
// GroupVersionKind or GroupVersionResource).
func (d *decoder) strings3(n1 string, s1 *string, n2 string, s2 *string, n3 string, s3 *string) error {
	if !d.structStart("group/version") {
		return d.skip()
	}
	return d.object(func(name []byte) error {
		switch string(name) {
		case n1:
			return d.str(s1)
		case n2:
			return d.str(s2)
		case n3:
			return d.str(s3)
		}
		return d.skip()
	})
}

// interpretString reads apiVersion or kind as encoding/json reads it into
// a string: null leaves it as it is.
func (d *decoder) interpretString(s *string, seen *bool) error {
	switch d.dec.PeekKind() {
	case '"':
		v, err := d.readString()
		if err == nil {
			*s, *seen = intern(v), true
		}
		return err
	case 'n':
		return d.skip()
	}
	if err := d.skip(); err != nil {
		return err
	}
	return &badReview{"apiVersion and kind must be strings"}
}

// readString reads a string value, unquoted (valid until the next read).
func (d *decoder) readString() ([]byte, error) {
	v, err := d.dec.ReadValue()
	if err != nil {
		return nil, err
	}
	return d.unquote(v), nil
}

// unquote is a JSON string's content with escapes resolved and invalid
// UTF-8 replaced by U+FFFD, as encoding/json reads it.
func (d *decoder) unquote(v jsontext.Value) []byte {
	if bytes.IndexByte(v, '\\') < 0 && utf8.Valid(v) {
		return v[1 : len(v)-1]
	}
	// The decoder has checked the syntax; the errors left are invalid
	// UTF-8 and surrogates, which are replaced.
	d.scratch, _ = jsontext.AppendUnquote(d.scratch[:0], v)
	return d.scratch
}

func (d *decoder) skip() error { return d.dec.SkipValue() }

// mismatch records a value of the wrong type and skips it.
func (d *decoder) mismatch(what string) error {
	d.fail(what)
	return d.skip()
}

// fail records a type mismatch, as encoding/json does: it goes on and
// reports the first one. One in the object spoils the pod only.
func (d *decoder) fail(what string) {
	err := fmt.Errorf("cannot decode a JSON %s into %s", kindName(d.dec.PeekKind()), what)
	switch {
	case d.inPod:
		if d.podErr == nil {
			d.podErr = err
		}
	case d.reqErr == nil:
		d.reqErr = err
	}
}

// intern returns the string of b, without allocating for the values
// common in reviews.
func intern(b []byte) string {
	switch string(b) {
	case "":
		return ""
	case "v1":
		return "v1"
	case "Pod":
		return "Pod"
	case "pods":
		return "pods"
	case "CREATE":
		return "CREATE"
	case reviewAPIVersion:
		return reviewAPIVersion
	case reviewKind:
		return reviewKind
	case "default":
		return "default"
	}
	return string(b)
}

// foldEqual reports whether name matches upper (an upper-case ASCII
// name) as encoding/json matches a member name to a field
// case-insensitively (its foldName: K matches the Kelvin sign, S the long s).
func foldEqual(name []byte, upper string) bool {
	j := 0
	for i := 0; i < len(name); {
		var c rune
		if b := name[i]; b < utf8.RuneSelf {
			c, i = rune(b), i+1
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
		} else {
			r, n := utf8.DecodeRune(name[i:])
			c, i = foldRune(r), i+n
		}
		if j >= len(upper) || c != rune(upper[j]) {
			return false
		}
		j++
	}
	return j == len(upper)
}

// foldRune is the smallest rune of r's fold set (encoding/json's).
func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}

// shape is the Go type of a member the webhook skips: encoding/json
// refuses a value of another type, and so controller-runtime refused the
// whole review, so the value is checked without being built.
type shape struct {
	kind   byte // 's' string, 'b' bool, 'i' int32, 'I' int64, 'B' []byte, 'o' struct, 'm' map, 'a' slice
	fields map[string]*shape
	elem   *shape
}

var (
	stringShape = &shape{kind: 's'}
	gvkShape    = &shape{kind: 'o', fields: map[string]*shape{"group": stringShape, "version": stringShape, "kind": stringShape}}
	gvrShape    = &shape{kind: 'o', fields: map[string]*shape{"group": stringShape, "version": stringShape, "resource": stringShape}}
	// authenticationv1.UserInfo
	userInfoShape = &shape{kind: 'o', fields: map[string]*shape{
		"username": stringShape, "uid": stringShape,
		"groups": {kind: 'a', elem: stringShape},
		"extra":  {kind: 'm', elem: &shape{kind: 'a', elem: stringShape}},
	}}
	// admissionv1.AdmissionResponse, which a request does not carry
	admissionResponseShape = &shape{kind: 'o', fields: map[string]*shape{
		"uid": stringShape, "allowed": {kind: 'b'},
		"status": {kind: 'o', fields: map[string]*shape{ // metav1.Status
			"kind": stringShape, "apiVersion": stringShape,
			"metadata": {kind: 'o', fields: map[string]*shape{
				"selfLink": stringShape, "resourceVersion": stringShape, "continue": stringShape,
				"remainingItemCount": {kind: 'I'},
			}},
			"status": stringShape, "message": stringShape, "reason": stringShape,
			"details": {kind: 'o', fields: map[string]*shape{
				"name": stringShape, "group": stringShape, "kind": stringShape, "uid": stringShape,
				"causes": {kind: 'a', elem: &shape{kind: 'o', fields: map[string]*shape{
					"reason": stringShape, "message": stringShape, "field": stringShape,
				}}},
				"retryAfterSeconds": {kind: 'i'},
			}},
			"code": {kind: 'i'},
		}},
		"patch":            {kind: 'B'},
		"patchType":        stringShape,
		"auditAnnotations": {kind: 'm', elem: stringShape},
		"warnings":         {kind: 'a', elem: stringShape},
	}}
	byteShape = &shape{kind: 'u'}
)

// check reads a value, recording a mismatch when encoding/json would not
// decode it into s.
func (d *decoder) check(s *shape) error {
	k := d.dec.PeekKind()
	if k == 'n' {
		return d.skip() // every type takes null
	}
	switch s.kind {
	case 's':
		if k == '"' {
			return d.skip()
		}
	case 'b':
		if k == 't' || k == 'f' {
			return d.skip()
		}
	case 'i', 'I', 'u':
		if k == '0' {
			v, err := d.dec.ReadValue()
			if err != nil {
				return err
			}
			var perr error
			switch s.kind {
			case 'i':
				_, perr = strconv.ParseInt(string(v), 10, 32)
			case 'I':
				_, perr = strconv.ParseInt(string(v), 10, 64)
			default:
				_, perr = strconv.ParseUint(string(v), 10, 8)
			}
			if perr != nil {
				d.fail("an integer")
			}
			return nil
		}
	case 'B':
		switch k {
		case '"':
			v, err := d.readString()
			if err != nil {
				return err
			}
			if _, err := base64.StdEncoding.DecodeString(string(v)); err != nil {
				d.fail("base64 bytes")
			}
			return nil
		case '[':
			return d.check(&shape{kind: 'a', elem: byteShape})
		}
	case 'o', 'm':
		if k == '{' {
			return d.object(func(name []byte) error {
				if s.kind == 'm' {
					return d.check(s.elem)
				}
				if f, ok := s.fields[string(name)]; ok {
					return d.check(f)
				}
				return d.skip()
			})
		}
	case 'a':
		if k == '[' {
			if _, err := d.dec.ReadToken(); err != nil {
				return err
			}
			for d.dec.PeekKind() != ']' {
				if err := d.check(s.elem); err != nil {
					return err
				}
			}
			_, err := d.dec.ReadToken()
			return err
		}
	}
	return d.mismatch("a member of another type")
}
