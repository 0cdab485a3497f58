package issuer

import (
	"context"
	"fmt"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
)

// TokenReviewer authenticates ServiceAccount tokens with the TokenReview API
// of the cluster client talks to. It asks the API server to check the token
// against audiences, so a token minted for the API server or any other
// audience is refused, as are expired tokens and tokens of deleted Pods or
// ServiceAccounts. The identity comes from the review, never from the caller.
type TokenReviewer struct {
	client    kubernetes.Interface
	audiences []string
}

// NewTokenReviewer returns an Authenticator that accepts tokens for any of
// audiences (use trust.DefaultAudience). The controller's ServiceAccount
// needs "create" on tokenreviews.authentication.k8s.io.
func NewTokenReviewer(client kubernetes.Interface, audiences ...string) *TokenReviewer {
	return &TokenReviewer{client: client, audiences: audiences}
}

const podNameExtra = "authentication.kubernetes.io/pod-name"

// Authenticate implements Authenticator.
func (r *TokenReviewer) Authenticate(ctx context.Context, token string) (Caller, error) {
	if len(r.audiences) == 0 {
		return Caller{}, fmt.Errorf("%w: issuer has no audiences configured", ErrUnauthenticated)
	}
	review := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: r.audiences}}
	res, err := r.client.AuthenticationV1().TokenReviews().Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		return Caller{}, fmt.Errorf("tokenreview: %w", err)
	}
	return callerFromReview(res.Status, r.audiences)
}

// callerFromReview turns a TokenReview's status into a Caller: the token
// must be authenticated, for one of audiences, and name a ServiceAccount
// (system:serviceaccount:<ns>:<sa>) whose namespace and name are valid
// Kubernetes names. Anything else is refused with ErrUnauthenticated.
func callerFromReview(st authnv1.TokenReviewStatus, audiences []string) (Caller, error) {
	if !st.Authenticated {
		reason := st.Error
		if reason == "" {
			reason = "not authenticated"
		}
		return Caller{}, fmt.Errorf("%w: %s", ErrUnauthenticated, reason)
	}
	if !slices.ContainsFunc(st.Audiences, func(a string) bool { return slices.Contains(audiences, a) }) {
		return Caller{}, fmt.Errorf("%w: token audiences %q do not include %q", ErrUnauthenticated, st.Audiences, audiences)
	}
	parts := strings.Split(st.User.Username, ":")
	if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" || parts[2] == "" || parts[3] == "" {
		return Caller{}, fmt.Errorf("%w: user %q is not a ServiceAccount", ErrUnauthenticated, st.User.Username)
	}
	if len(validation.IsDNS1123Label(parts[2])) > 0 || len(validation.IsDNS1123Subdomain(parts[3])) > 0 {
		return Caller{}, fmt.Errorf("%w: user %q does not name a valid namespace and ServiceAccount", ErrUnauthenticated, st.User.Username)
	}
	c := Caller{Namespace: parts[2], ServiceAccount: parts[3]}
	if pods := st.User.Extra[podNameExtra]; len(pods) == 1 && len(validation.IsDNS1123Subdomain(pods[0])) == 0 {
		c.Pod = pods[0]
	}
	return c, nil
}
