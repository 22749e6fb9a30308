"""The modeling layer: backbones and where virtual tokens go (``placement``), ``SoftPromptModel``,
generation with the KV cache, CPU kernels, classifiers and the reward-model module, sentence
embeddings, PEFT interop. Imports the configuration layer and adapters, nothing above."""
