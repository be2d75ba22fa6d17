"""Draw docs/example.jpg: a few filled shapes on a noisy background (seeded)."""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

if __name__ == "__main__":
    rng = np.random.default_rng(7)
    background = rng.normal(128, 30, (300, 400, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    draw.ellipse([40, 60, 150, 170], fill=(220, 40, 40))
    draw.rectangle([200, 40, 330, 150], fill=(40, 90, 220))
    draw.polygon([(120, 280), (200, 170), (280, 280)], fill=(40, 190, 70))
    out = Path(__file__).resolve().parent.parent / "docs" / "example.jpg"
    image.save(out, quality=92)
    print(f"wrote {out}")
