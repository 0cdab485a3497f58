package sandbox

import (
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
)

var everything = labels.Everything()

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }
