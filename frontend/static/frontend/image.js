// The item's image on the labelling page: shown beside the text, zoomable from the keyboard (Z toggles zoom;
// Escape leaves it), blurred with the rest of the card when wellness.js blurs it (sift.css, .is-blurred).
// label.js announces each item with "sift:item", carrying `image` (the queue's item.image block, or null).
// The URLs are the API's project-scoped image view; the picture is only ever an <img> (never navigated to).
(function () {
  "use strict";
  const root = document.getElementById("labeller");
  const figure = document.getElementById("item-figure");
  const caption = document.getElementById("item-image-name");
  if (!root || !figure || !caption) return;
  // Made here only while an image item is shown, never sent in the page's HTML: a text item's card holds no <img> at
  // all (tests/security checks the page and the card), and the only picture is the one an image item brings.
  let img = null;

  function makeImage() {
    const made = document.createElement("img");
    made.id = "item-image";
    made.alt = "";
    made.decoding = "async";
    made.referrerPolicy = "no-referrer";
    made.title = "Z: zoom";
    made.addEventListener("click", () => {
      if (document.getElementById("item-card").dataset.blurred === "true") return;
      setZoom(figure.dataset.zoomed !== "true");
    });
    figure.insertBefore(made, figure.firstChild);
    return made;
  }

  function setZoom(on) {
    figure.classList.toggle("is-zoomed", on);
    figure.dataset.zoomed = on ? "true" : "false";
    if (img) img.setAttribute("aria-expanded", on ? "true" : "false");
  }

  function render(image) {
    setZoom(false);
    if (!image) {
      figure.hidden = true;
      if (img) img.remove();
      img = null;
      caption.textContent = "";
      return;
    }
    if (!img) img = makeImage();
    img.width = image.display_width;
    img.height = image.display_height;
    img.alt = "Image of this item: " + image.name;
    img.src = image.display;
    caption.textContent = image.name + " · " + image.width + "×" + image.height;
    figure.hidden = false;
  }

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT")) return;
    if (figure.hidden || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "z" || event.key === "Z") {
      if (document.getElementById("item-card").dataset.blurred === "true") return;  // reveal first (V)
      event.preventDefault();
      setZoom(figure.dataset.zoomed !== "true");
    } else if (event.key === "Escape" && figure.dataset.zoomed === "true") {
      event.preventDefault();
      setZoom(false);
    }
  });
  root.addEventListener("sift:item", (event) => render(event.detail.image || null));
})();
