"""Gate previews: each student image with its score and decision drawn on it."""
import numpy as np
from PIL import Image, ImageDraw

import folder_paths

KEPT, TO_TEACHER = (40, 170, 60), (215, 50, 40)


def annotated(image: np.ndarray, text: str, kept: bool) -> Image.Image:
    img = Image.fromarray(np.clip(image * 255.0, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    colour = KEPT if kept else TO_TEACHER
    w, h = img.size
    border = max(2, min(w, h) // 64)
    draw.rectangle([0, 0, w - 1, h - 1], outline=colour, width=border)
    box = draw.textbbox((0, 0), text)
    draw.rectangle([border, border, border + box[2] + 6, border + box[3] + 6], fill=colour)
    draw.text((border + 3, border + 3), text, fill=(255, 255, 255))
    return img


def save_previews(images, captions, kept, prefix="StudentTeacher_gate"):
    """Write temp PNGs the front end shows on the node; returns the ui 'images' list."""
    out_dir = folder_paths.get_temp_directory()
    full, name, counter, subfolder, _ = folder_paths.get_save_image_path(
        prefix, out_dir, images.shape[2], images.shape[1])
    ui = []
    for i, (img, text, ok) in enumerate(zip(images.float().cpu().numpy(), captions, kept)):
        file = f"{name}_{counter + i:05}_.png"
        annotated(img, text, ok).save(f"{full}/{file}", compress_level=1)
        ui.append({"filename": file, "subfolder": subfolder, "type": "temp"})
    return ui
