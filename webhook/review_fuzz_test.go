package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	admissionv1beta1 "k8s.io/api/admission/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"
)

// The codec controller-runtime decodes AdmissionReviews with (its
// admission package's admissionCodecs), and its unregistered review type.
var oracleCodecs = func() serializer.CodecFactory {
	s := runtime.NewScheme()
	utilruntime.Must(admissionv1.AddToScheme(s))
	utilruntime.Must(admissionv1beta1.AddToScheme(s))
	return serializer.NewCodecFactory(s)
}()

type oracleReview struct{ admissionv1.AdmissionReview }

// oracleDecodeReview decodes body as controller-runtime did, then refuses
// what the served path refuses on purpose: any review but an
// admission.k8s.io/v1 AdmissionReview with a request, and any body that is
// not JSON (the deserializer reads YAML too: a byte-order mark, "---" or a
// comment before the object).
func oracleDecodeReview(body []byte) *admissionv1.AdmissionRequest {
	req, _ := oracleDecodeReviewAliased(body)
	return req
}

// oracleDecodeReviewAliased is oracleDecodeReview, also reporting whether
// controller-runtime acted on the request decoded. It decoded into a
// review whose request pointed at its own: a "request": null followed by
// another request replaced the pointer, and controller-runtime went on with
// the empty request it started with, a quirk the served path does not
// keep (it acts on the request decoded, as encoding/json reads it).
func oracleDecodeReviewAliased(body []byte) (req *admissionv1.AdmissionRequest, aliased bool) {
	if !utilyaml.IsJSONBuffer(body) {
		return nil, false
	}
	decode := func(request *admissionv1.AdmissionRequest) *admissionv1.AdmissionRequest {
		ar := oracleReview{}
		ar.SetGroupVersionKind(admissionv1.SchemeGroupVersion.WithKind("AdmissionReview"))
		ar.Request = request
		_, gvk, err := oracleCodecs.UniversalDeserializer().Decode(body, nil, &ar)
		if err != nil || gvk == nil || *gvk != admissionv1.SchemeGroupVersion.WithKind("AdmissionReview") {
			return nil
		}
		return ar.Request
	}
	// Decoded from nothing, the request is nil when the review has none;
	// decoded into controller-runtime's own, it is that one unless replaced.
	req = decode(nil)
	if req == nil {
		return nil, false
	}
	var own admissionv1.AdmissionRequest
	return req, decode(&own) == &own
}

// flatView is what the review reads, comparable between the two decoders.
type flatView struct {
	UID, Group, Version, Kind, ResGroup, ResVersion, Resource string
	SubResource, Namespace, Operation, Name                   string
	DryRun                                                    bool
	PodOK                                                     bool
	PodName, GenerateName, ServiceAccount                     string
	OptedOut, PullSecretsSet                                  bool
	PullSecrets, Containers, Init, Ephemeral                  []string
}

func viewOf(r *reviewRequest) flatView {
	v := flatView{
		UID: r.uid, Group: r.group, Version: r.version, Kind: r.kind,
		ResGroup: r.resGroup, ResVersion: r.resVersion, Resource: r.resource,
		SubResource: r.subResource, Namespace: r.namespace, Operation: r.operation, Name: r.nm, DryRun: r.dryRun,
		PodOK: r.podErr == nil,
	}
	if v.PodOK {
		p := &r.pod
		v.PodName, v.GenerateName, v.ServiceAccount, v.OptedOut = p.name, p.generateName, p.serviceAccountName, p.optedOut
		v.PullSecretsSet = p.pullSecrets.isSet
		v.PullSecrets = append([]string{}, p.pullSecrets.items()...)
		v.Containers = append([]string{}, p.containers.items()...)
		v.Init = append([]string{}, p.initContainers.items()...)
		v.Ephemeral = append([]string{}, p.ephemeralContainers.items()...)
	}
	return v
}

func oracleViewOf(req *admissionv1.AdmissionRequest, optKey, optValue string) flatView {
	v := flatView{
		UID: string(req.UID), Group: req.Kind.Group, Version: req.Kind.Version, Kind: req.Kind.Kind,
		ResGroup: req.Resource.Group, ResVersion: req.Resource.Version, Resource: req.Resource.Resource,
		SubResource: req.SubResource, Namespace: req.Namespace, Operation: string(req.Operation), Name: req.Name,
		DryRun: req.DryRun != nil && *req.DryRun,
	}
	p, err := oracleDecodePod(req.Object.Raw)
	if v.PodOK = err == nil; v.PodOK {
		v.PodName, v.GenerateName, v.ServiceAccount = p.Metadata.Name, p.Metadata.GenerateName, p.Spec.ServiceAccountName
		lv, ok := p.Metadata.Labels[optKey]
		v.OptedOut = ok && lv == optValue
		v.PullSecretsSet = p.Spec.ImagePullSecrets != nil
		v.PullSecrets = []string{}
		for _, s := range p.Spec.ImagePullSecrets {
			v.PullSecrets = append(v.PullSecrets, s.Name)
		}
		images := func(cs []oracleContainer) []string {
			out := []string{}
			for _, c := range cs {
				out = append(out, c.Image)
			}
			return out
		}
		v.Containers, v.Init, v.Ephemeral = images(p.Spec.Containers), images(p.Spec.InitContainers), images(p.Spec.EphemeralContainers)
	}
	return v
}

// FuzzReviewDecoder holds the served path to the one it replaced: for any
// body, decodeReview reads the same view as controller-runtime's decoding
// followed by the old sigs.k8s.io/json pod decoding (oracleDecodePod), or
// both refuse the body; and ServeHTTP's answer decodes to the
// admission.Response that controller-runtime's admission.Webhook wrote
// around oracleHandler.
func FuzzReviewDecoder(f *testing.F) {
	for _, seed := range reviewSeeds(f) {
		f.Add(seed)
	}
	h, _ := testHandler(f, instantSecrets{}, func(o *Options) { o.Log = logr.Discard() })
	old := &admission.Webhook{Handler: oracleHandler{h}}
	old.LogConstructor = func(logr.Logger, *admission.Request) logr.Logger { return logr.Discard() }
	var d decoder
	d.optOut.key, d.optOut.value = h.optOutKey, h.optOutValue
	d.strs = &internCache{} // kept across inputs, as the served path's is
	var got reviewRequest

	f.Fuzz(func(t *testing.T, body []byte) {
		want, aliased := oracleDecodeReviewAliased(body)
		err := d.decodeReview(bytes.NewBuffer(body), &got)
		switch {
		case want == nil && err == nil:
			t.Fatalf("decoded a body controller-runtime's decoding refuses (or not a v1 review): %+v", viewOf(&got))
		case want != nil && err != nil:
			t.Fatalf("refused a review controller-runtime decodes: %v", err)
		case want == nil:
			return
		}
		if g, w := viewOf(&got), oracleViewOf(want, h.optOutKey, h.optOutValue); !reflect.DeepEqual(g, w) {
			t.Fatalf("views differ:\n got %+v\nwant %+v", g, w)
		}

		if !aliased {
			return // controller-runtime answered the request it started with (see oracleDecodeReviewAliased)
		}
		// The old side (oracleHandler) reads the pod with the new decodePod:
		// this compares the answers' encoding; the views above compare the
		// pod decoding with sigs.k8s.io/json's.
		newResp, err := answerOf(h, body)
		if err != nil {
			t.Fatalf("served path: %v", err)
		}
		oldResp, err := answerOf(old, body)
		if err != nil {
			t.Fatalf("controller-runtime path: %v", err)
		}
		if !sameResponse(t, newResp, oldResp) {
			t.Fatalf("answers differ:\n got %+v patch %s\nwant %+v patch %s", newResp.AdmissionResponse, newResp.Patch, oldResp.AdmissionResponse, oldResp.Patch)
		}
	})
}

func answerOf(h http.Handler, body []byte) (admission.Response, error) {
	r := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return decodeAnswer(rec)
}

func sameResponse(t *testing.T, a, b admission.Response) bool {
	if !jsonEqual(t, a.Patch, b.Patch) {
		return false
	}
	a.Patch, b.Patch, a.Patches, b.Patches = nil, nil, nil, nil
	return reflect.DeepEqual(a, b)
}

// reviewSeeds are the golden fixtures' pods and the admission fuzz corpus,
// as reviews, plus bodies for the decoding rules kept from sigs.k8s.io/json.
func reviewSeeds(f *testing.F) [][]byte {
	seeds := admissionSeeds(f)
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var fx fixture
		if err := yaml.UnmarshalStrict(b, &fx); err != nil {
			f.Fatal(err)
		}
		req := podRequest(f, testNamespace, []byte(fx.Pod))
		req.DryRun = &fx.DryRun
		body, err := json.Marshal(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Request: &req.AdmissionRequest})
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, body)
	}
	corpus, _ := filepath.Glob("testdata/fuzz/FuzzAdmissionReview/*")
	for _, file := range corpus {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		// go test fuzz v1, one []byte("...") line
		lines := bytes.SplitN(b, []byte("\n"), 2)
		if len(lines) == 2 {
			var s string
			if q := bytes.TrimSpace(lines[1]); bytes.HasPrefix(q, []byte("[]byte(")) {
				if err := json.Unmarshal(q[len("[]byte("):len(q)-1], &s); err == nil {
					seeds = append(seeds, []byte(s))
				}
			}
		}
	}
	const head = `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Pod","version":"v1"},"operation":"CREATE","namespace":"team-a","object":`
	for _, obj := range []string{
		`{"spec":{"containers":[{"image":"artifactory.example.com/a:1"},{"image":"b"}],"containers":[{"name":"x"}]}}`,
		`{"spec":{"imagePullSecrets":null,"containers":[{"image":"artifactory.example.com/a"}]}}`,
		`{"spec":{"imagePullSecrets":[],"containers":[{"image":"artifactory.example.com/a"}]}}`,
		`{"spec":{"imagePullSecrets":[{"name":"artifactory-main"}],"containers":[{"image":"artifactory.example.com/a"}]}}`,
		`{"metadata":{"labels":{"artifactory-pull-webhook/inject":"disabled","a":null}},"spec":{"containers":[{"image":"artifactory.example.com/a"}]}}`,
		`{"metadata":{"name":"a","name":null},"spec":{"containers":[null,{"image":"\u0061rtifactory.example.com/a"}]}}`,
		`{"spec":{"containers":[{"image":"artifactory.example.com/\xff"}]}}`,
		`{"spec":{"containers":[{"image":5}]}}`,
	} {
		seeds = append(seeds, []byte(head+obj+`}}`))
	}
	seeds = append(seeds,
		[]byte(`{"APIVERSION":"admission.k8s.io/v1","KIND":"AdmissionReview","request":{"uid":"u"}}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","userInfo":{"groups":[1]}}}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u"},"response":{"patch":"!!"}}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","dryRun":true},"request":null}`),
		// controller-runtime answered the request it started with here (uid
		// ""); the served path answers the one decoded.
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null,"request":{"uid":"b","kind":{"kind":"Pod","version":"v1"},"operation":"CREATE"}}`),
		// YAML the deserializer reads, not JSON: refused.
		[]byte("\xef\xbb\xbf{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\"}}"),
		[]byte("---\n{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\"}}"),
	)
	return slices.Clip(seeds)
}
