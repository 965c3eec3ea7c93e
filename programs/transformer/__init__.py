"""The tiny transformer run end to end: the addition task (:mod:`.task`), the model with its
float and integer references (:mod:`.model`, the integer pipeline documented there), training
and quantization (:mod:`.train`, needs torch) and the held-out evaluation (:mod:`.evaluate`).
The shipped model file is ``weights.npz`` beside this file."""
