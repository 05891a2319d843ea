"""The built-in layer kinds; importing this package registers them."""

from .attention import MultiHeadAttention, Transformer
from .base import Context, Inferred, Layer, Weight
from .conv import Conv, ConvTranspose, DepthwiseConv, SeparableConv
from .dense import Dense
from .elementwise import ACTIVATION_FLOPS, Activation, Dropout, Identity, Opaque
from .embedding import Embedding
from .merge import Concatenate, Dot, Merge
from .norm import BatchNorm, GroupNorm, LayerNorm, Normalization, RMSNorm
from .pooling import AdaptivePool, GlobalPool, Pool
from .recurrent import Recurrent
from .reshape import Flatten, Permute, Reshape, Unflatten
from .shape_ops import Crop, Pad, PixelShuffle, RepeatVector, Rescale, TimeDistributed, UpSample
from .values import Expand, Parameter, SizeOf, ValueOp
from .tensor_ops import Index, MatMul, PReLU, Reduce, ScalarOp, Squeeze, Transpose, Unsqueeze, View

__all__ = [
    "ACTIVATION_FLOPS", "Activation", "AdaptivePool", "BatchNorm", "Concatenate", "Context", "Conv",
    "ConvTranspose", "Crop", "Dense", "DepthwiseConv", "Dot", "Dropout", "Embedding", "Flatten",
    "GlobalPool", "GroupNorm", "Identity", "Index", "Inferred", "Layer", "LayerNorm", "MatMul", "Merge",
    "MultiHeadAttention", "Normalization", "Opaque", "Pad", "Permute", "PixelShuffle", "Pool", "PReLU", "RMSNorm", "Recurrent", "Reduce",
    "RepeatVector", "Rescale", "Reshape", "ScalarOp", "SeparableConv", "Squeeze", "TimeDistributed",
    "Transformer", "Transpose", "Unflatten", "Unsqueeze", "UpSample", "View", "Weight", "Expand",
    "Parameter", "SizeOf", "ValueOp",
]
