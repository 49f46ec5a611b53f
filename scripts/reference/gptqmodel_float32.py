"""GPTQModel's and transformers' reading of a GPTQ folder, computed in float32 on the CPU.

Their CPU kernels do not compute in float32 (GPTQModel 7.7's gptq_torch takes float16 and
bfloat16 only; gptq_torch_fused casts float32 inputs to bfloat16, 0.9% off in the logits), so
each quantized linear is replaced by a float32 linear on the weight that the loaded module's own
`dequantize_weight()` gives: the packed tensors as the loader read them (v1 zero points
included), with the rest of the network in float32. Folders whose every quantized module is
4-bit load through gptq_torch_fused in float32; others (2/3/8 bits, or a `dynamic` override such
as GPTQModel's 8-bit lm_head), which it does not take, through gptq_torch in float16, are then
cast to float32 and get the checkpoint's unquantized float tensors back from the file, unrounded.
Used by scripts/fixtures/make_gptqmodel_fixtures.py and scripts/reference/interop_check.py.
"""
import glob, json, os, shutil
import torch
from safetensors.torch import load_file
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


def quantization_config(folder):
    return json.load(open(os.path.join(folder, "config.json")))["quantization_config"]


def all_four_bit(settings):
    return settings["bits"] == 4 and all(rule.get("bits", 4) == 4 for rule in (settings.get("dynamic") or {}).values())


def backend_and_dtype(folder):
    return ("gptq_torch_fused", torch.float32) if all_four_bit(quantization_config(folder)) else ("gptq_torch", torch.float16)


def with_float_tensors_of(folder, model):
    """A model loaded in float16 gets the file's float tensors (norms, embeddings, float linears) back exactly."""
    state = model.state_dict()
    for path in glob.glob(os.path.join(folder, "*.safetensors")):
        for name, tensor in load_file(path).items():
            if tensor.is_floating_point() and name in state and state[name].shape == tensor.shape:
                state[name].copy_(tensor)
    return model


def float32(model, folder, dtype):
    model = with_float32_linears(model)
    return with_float_tensors_of(folder, model) if dtype != torch.float32 else model


def gptqmodel_float32(folder):
    from gptqmodel import BACKEND, GPTQModel
    backend, dtype = backend_and_dtype(folder)
    return float32(GPTQModel.load(folder, device="cpu", backend=BACKEND(backend), dtype=dtype).model, folder, dtype)


def transformers_float32(folder):
    from transformers import AutoModelForCausalLM, GPTQConfig
    backend, dtype = backend_and_dtype(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, device_map="cpu",
                                                 quantization_config=GPTQConfig(bits=quantization_config(folder)["bits"], backend=backend))
    return float32(model, folder, dtype)


def logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(input_ids, dtype=torch.long)).logits.float().numpy()
