"""LRP through zennit 0.4.6: conservation on a tiny bias-free ReLU network with hand-set weights, the
EfficientNet-Lite canonizer written here keeps the bundled model's logits, LRP never touches the shared
model, it is an evidence method with faithfulness scores, and families without a canonizer are refused."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from vizcore.activations import preprocess
from vizcore.data import load_sample
from vizcore.evidence import MethodNotApplicable, evidence, explain, list_methods
from vizcore.evidence.lrp import COMPOSITES, canonizers_for, composite_of, lrp, relevance


def _tiny() -> nn.Module:
    """conv 1->2 (2x2, no bias) -> ReLU -> flatten -> linear 8->3 (no bias), weights by hand."""
    net = nn.Sequential(nn.Conv2d(1, 2, 2, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[[[1.0, -0.5], [0.25, 2.0]]], [[[-1.0, 0.5], [1.5, 0.5]]]]))
        net[3].weight.copy_(torch.tensor([[0.5, -1.0, 2.0, 0.25, 1.0, 0.5, -0.5, 1.5],
                                          [1.0, 1.0, -1.0, 0.5, 0.25, -2.0, 1.0, 0.5],
                                          [-0.5, 2.0, 0.5, 1.0, -1.0, 0.25, 0.5, -1.0]]))
    return net.eval()


X = torch.tensor([[[[0.2, 0.9, 0.4], [0.7, 0.1, 0.8], [0.3, 0.6, 0.5]]]])


@pytest.mark.parametrize("target", [0, 1, 2])
def test_epsilon_rule_conserves_the_logit_on_a_bias_free_relu_network(target):
    net = _tiny()
    rel, out = relevance(net, X, target, composite_of("epsilon", epsilon=1e-9))
    with torch.no_grad():
        logit = float(net(X)[0, target])
    assert float(out[0, target]) == pytest.approx(logit, abs=1e-6)
    assert float(rel.sum()) == pytest.approx(logit, abs=1e-5)
    # without biases the epsilon-0 rule is gradient x input (Ancona et al. 2018): an exact check of every pixel
    x = X.clone().requires_grad_(True)
    net(x)[0, target].backward()
    np.testing.assert_allclose(rel.numpy(), (x.grad * X).numpy(), atol=1e-5)
    assert torch.count_nonzero(rel) > 0


def test_lrp_is_registered_and_bad_composites_fail():
    assert "lrp" in list_methods()
    with pytest.raises(ValueError, match="composite"):
        composite_of("bogus")


@pytest.mark.slow
def test_efficientnet_lite_canonizer_keeps_the_logits_and_the_shared_model_untouched(lite0):
    import copy

    x = preprocess(lite0, load_sample("cat"))
    before = {k: v.clone() for k, v in lite0.model.state_dict().items()}
    with torch.no_grad():
        want = lite0.model(x)
    model = copy.deepcopy(lite0.model)
    cans = canonizers_for(lite0, model, x)
    comp = composite_of("epsilon", canonizers=cans)
    rel, out = relevance(model, x, 285, comp)
    torch.testing.assert_close(out, want, atol=2e-3, rtol=1e-4)  # folded batch norms, same function
    assert torch.isfinite(rel).all() and rel.shape == x.shape
    # canonizers are removed afterwards: the copy computes as before, its weights restored
    with torch.no_grad():
        torch.testing.assert_close(model(x), want, atol=1e-5, rtol=0)
    ev = evidence(lite0, x, 285, "lrp")
    assert ev.map.shape == (224, 224) and ev.settings["composite"] == "epsilon"
    assert ev.extra["logit"] == pytest.approx(float(want[0, 285]), abs=2e-3)
    assert np.isfinite(ev.map).all() and ev.map.max() > 0
    rep = explain(lite0, load_sample("cat"), 285, ["lrp"], steps=8)
    assert 0 <= rep.scores["lrp"].deletion_auc <= 1 and 0 <= rep.scores["lrp"].insertion_auc <= 1
    for k, v in lite0.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    rel2, total, logit = lrp(lite0, x, 285, "epsilon_gamma_box")
    assert not (np.isfinite(total) and abs(total) < 100 * abs(logit)) or "unstable" not in " ".join(ev.caveats)
    assert set(COMPOSITES) >= {"epsilon", "epsilon_gamma_box", "epsilon_plus_flat", "epsilon_alpha2_beta1_flat"}


@pytest.mark.slow
def test_resnet_uses_zennits_canonizer_and_densenet_is_refused(resnet18_random):
    from vizcore.models import load_model

    x = preprocess(resnet18_random, load_sample("cat"))
    for comp in COMPOSITES:
        ev = evidence(resnet18_random, x, 1, "lrp", composite=comp)
        assert ev.map.shape == (224, 224), comp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dn = load_model("densenet121", "random")
    with pytest.raises(MethodNotApplicable, match="no LRP canonizer for densenet121"):
        evidence(dn, preprocess(dn, load_sample("cat")), 1, "lrp")
