"""GPTQModel's and transformers' reading of a GPTQ folder, computed in float32 on the CPU.

Their CPU kernels do not compute in float32 (GPTQModel 7.7's gptq_torch takes float16 and
bfloat16 only; gptq_torch_fused casts float32 inputs to bfloat16, 0.9% off in the logits), so
each quantized linear is replaced by a float32 linear on the weight that the loaded module's own
`dequantize_weight()` gives: the packed tensors as the loader read them (v1 zero points
included), with the rest of the network in float32. Used by
scripts/fixtures/make_gptqmodel_fixtures.py and scripts/reference/interop_check.py.
"""
import os, shutil
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast


def add_word_level_tokenizer(folder, vocab_size):
    """GPTQModel loads a tokenizer with every model: the tiny fixtures have none, so ids t0… stand in."""
    tokenizer = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="t0", pad_token="t1").save_pretrained(folder)


def with_float32_linears(model):
    """`model` with every GPTQModel quantized linear computed in float32 from its dequantized weight."""
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear
    for module in model.modules():
        if isinstance(module, BaseQuantLinear):
            # transformers keeps the scales in float16, where (q − zero) · scale would round.
            module.scales.data = module.scales.data.float()
            weight = module.dequantize_weight().float().t().contiguous()
            bias = None if module.bias is None else module.bias.float()
            module.forward = lambda x, weight=weight, bias=bias: torch.nn.functional.linear(x, weight, bias)
    return model


def gptqmodel_float32(folder):
    from gptqmodel import BACKEND, GPTQModel
    return with_float32_linears(GPTQModel.load(folder, device="cpu", backend=BACKEND.GPTQ_TORCH_FUSED, dtype=torch.float32).model)


def transformers_float32(folder, bits):
    from transformers import AutoModelForCausalLM, GPTQConfig
    config = GPTQConfig(bits=bits, backend="gptq_torch_fused")
    return with_float32_linears(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, device_map="cpu",
                                                                     quantization_config=config))


def logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(input_ids, dtype=torch.long)).logits.float().numpy()
