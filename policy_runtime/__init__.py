"""The policy: the torch model (`model/`), the engines that run it (`engines/`), preprocessing shared by
training and inference, and the checkpoint and bundle formats."""
