"""Fine-tuning setup for torchvision's ResNet-18: frozen backbone, trainable layer4 and new head."""

from torch import nn


def resnet18_finetune(num_classes: int = 5):
    """Return a randomly initialised ResNet-18 with only layer4 and a new fc head trainable (input 1x3x224x224)."""
    from torchvision.models import resnet18  # imported lazily: torchvision is optional

    model = resnet18(weights=None)  # use weights="DEFAULT" for real fine-tuning
    for param in model.parameters():
        param.requires_grad = False
    for param in model.layer4.parameters():
        param.requires_grad = True
    # Replace the 1000-class ImageNet head; a fresh Linear is trainable by default.
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model
