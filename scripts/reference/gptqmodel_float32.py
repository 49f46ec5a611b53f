"""GPTQModel's and transformers' reading of a GPTQ folder, computed in float32 on the CPU.

Their CPU kernels do not compute in float32 (GPTQModel 7.7's gptq_torch takes float16 and
bfloat16 only; gptq_torch_fused casts float32 inputs to bfloat16, 0.9% off in the logits), so
each quantized linear is replaced by a float32 linear on the weight that the loaded module's own
`dequantize_weight()` gives: the packed tensors as the loader read them (v1 zero points
included), with the rest of the network in float32. 4-bit folders load through gptq_torch_fused
in float32; other widths, which it does not take, through gptq_torch in float16 and are then cast
to float32, which is exact where the unquantized tensors are float16 (as swift-gptq writes them). Used by
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
    """`model` in float32, every GPTQModel quantized linear computed from its dequantized weight.
    (The tensors are cast in place: transformers refuses `.float()` on a quantized model.)"""
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            tensor.data = tensor.data.float()
    for module in model.modules():
        if isinstance(module, BaseQuantLinear):
            # The class's own dequantize_weight (loading may have put a torch.compile'd copy,
            # specialised to float16, on the instance), in training mode, where it takes its
            # generic path: gptq_torch's eval-time cache for 2, 4 and 8 bits keeps float16 tables.
            module.train()
            weight = type(module).dequantize_weight(module).t().contiguous()
            module.eval()
            bias = module.bias
            module.forward = lambda x, weight=weight, bias=bias: torch.nn.functional.linear(x, weight, bias)
    return model


def backend_and_dtype(bits):
    return ("gptq_torch_fused", torch.float32) if bits == 4 else ("gptq_torch", torch.float16)


def gptqmodel_float32(folder, bits):
    from gptqmodel import BACKEND, GPTQModel
    backend, dtype = backend_and_dtype(bits)
    return with_float32_linears(GPTQModel.load(folder, device="cpu", backend=BACKEND(backend), dtype=dtype).model)


def transformers_float32(folder, bits):
    from transformers import AutoModelForCausalLM, GPTQConfig
    backend, dtype = backend_and_dtype(bits)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, device_map="cpu",
                                                 quantization_config=GPTQConfig(bits=bits, backend=backend))
    return with_float32_linears(model)


def logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(input_ids, dtype=torch.long)).logits.float().numpy()
