// The console works without this file; with it, a key can be copied with one click.
document.querySelectorAll("button[data-copy]").forEach(function (button) {
  button.hidden = false;
  button.addEventListener("click", function () {
    var text = document.getElementById(button.dataset.copy).textContent;
    navigator.clipboard.writeText(text).then(function () {
      button.textContent = "Copied";
    }, function () {
      button.textContent = "Copy failed: select the key and copy it";
    });
  });
});
