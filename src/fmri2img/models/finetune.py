"""A fitted decoder as a torch module and back, for full fine-tuning by gradient.

Ridge becomes an ``nn.Linear`` holding its coefficients; torch decoders hand over a copy of
their network. After training, :func:`with_module` returns a new decoder of the same type
and configuration holding the tuned weights; the original is left untouched.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from fmri2img.models.base import Decoder


def trainable_module(decoder: Decoder) -> nn.Module:
    from fmri2img.models.ridge import Ridge
    from fmri2img.models.torch_decoder import TorchDecoder

    if isinstance(decoder, Ridge):
        layer = nn.Linear(decoder.n_inputs, decoder.n_outputs)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.asarray(decoder.coef_, np.float32).T))
            layer.bias.copy_(torch.from_numpy(np.asarray(decoder.intercept_, np.float32)))
        return layer
    if isinstance(decoder, TorchDecoder):
        net = copy.deepcopy(decoder._fitted()).cpu()
        net.train()
        return net
    raise TypeError(f"no fine-tuning for decoders of type {type(decoder).__name__}")


def with_module(decoder: Decoder, module: nn.Module) -> Decoder:
    """A new decoder like ``decoder`` whose weights are ``module``'s."""
    arrays, meta = decoder.state()
    if isinstance(module, nn.Linear):
        dtype = np.asarray(arrays["coef"]).dtype
        arrays = dict(arrays)
        arrays["coef"] = module.weight.detach().cpu().numpy().T.astype(dtype)
        arrays["intercept"] = module.bias.detach().cpu().numpy().astype(dtype)
    else:
        arrays = {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
    return type(decoder).from_state(decoder.n_inputs, decoder.n_outputs, decoder.config,
                                    arrays, meta)
